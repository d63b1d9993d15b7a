//! The explanation for people: one block per step, then the outcome.

use std::fmt;

use super::{Destination, Explanation, Outcome, Scheme, Step, StepKind};

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        let scheme = match r.scheme {
            Scheme::Http => "http",
            Scheme::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}:{}", r.host, r.port)?;
        if r.scheme == Scheme::Http {
            write!(f, "{}", r.path)?;
        }
        if let Some(ip) = r.destination_ip {
            write!(f, " (to {ip})")?;
        }
        writeln!(f)?;
        for (name, value) in &r.headers {
            writeln!(f, "  {name}: {value}")?;
        }
        for step in &self.steps {
            write_step(f, step)?;
        }
        writeln!(f)?;
        write_outcome(f, &self.outcome)
    }
}

fn kind(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Listener => "listener",
        StepKind::FilterChain => "filter chain",
        StepKind::RouteConfiguration => "route configuration",
        StepKind::VirtualHost => "virtual host",
        StepKind::Route => "route",
        StepKind::Cluster => "cluster",
    }
}

fn write_step(f: &mut fmt::Formatter<'_>, step: &Step) -> fmt::Result {
    writeln!(f, "\n{}: {}", kind(step.kind), step.name)?;
    for note in &step.notes {
        writeln!(f, "    {note}")?;
    }
    for miss in &step.not_matched {
        writeln!(f, "    not {}: {}", miss.name, miss.reason)?;
    }
    for key in &step.config {
        writeln!(f, "    from {key}")?;
    }
    Ok(())
}

fn write_outcome(f: &mut fmt::Formatter<'_>, outcome: &Outcome) -> fmt::Result {
    match outcome {
        Outcome::Forwarded { destinations } => {
            writeln!(f, "=> forwarded to:")?;
            destinations
                .iter()
                .try_for_each(|d| write_destination(f, d))
        }
        Outcome::Passthrough { cluster, address } => {
            writeln!(f, "=> passed through ({cluster}) to {address}")
        }
        Outcome::Blackhole { cluster } => writeln!(f, "=> dropped ({cluster})"),
        Outcome::DirectResponse { status, body } => {
            write!(f, "=> answered by Envoy: {status}")?;
            match body {
                Some(body) => writeln!(f, " {body:?}"),
                None => writeln!(f),
            }
        }
        Outcome::Redirect { status, location } => {
            writeln!(f, "=> redirected: {status} to {location}")
        }
        Outcome::Failed { reason } => writeln!(f, "=> fails: {reason}"),
    }
}

fn write_destination(f: &mut fmt::Formatter<'_>, d: &Destination) -> fmt::Result {
    write!(f, "  {}", d.cluster)?;
    if let Some(weight) = d.weight {
        write!(f, " (weight {weight})")?;
    }
    if !d.found {
        write!(f, " [missing: 503]")?;
    }
    writeln!(f)?;
    for e in &d.endpoints {
        write!(f, "    {}:{} {}", e.address, e.port, e.health)?;
        if !e.labels.is_empty() {
            let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " {}", labels.join(","))?;
        }
        writeln!(f)?;
    }
    Ok(())
}
