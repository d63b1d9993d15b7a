use clap::Parser;
use pilotfish_loadgen::run::{Args, run};
use tracing_subscriber::EnvFilter;

/// The generator allocates and frees a request per ACK on every stream;
/// glibc's free-list upkeep was its largest cost, which mimalloc avoids
/// (the server's figures should not depend on the client's allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    run(Args::parse()).await?;
    Ok(())
}
