mod support;
use support::kube_apiserver::KubeApiServer;
#[test]
fn scratch() {
    let s = KubeApiServer::start("scratch");
    let out = s.kubectl_stdin(&["apply", "-f", "-"], r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: x, namespace: default, labels: {kubernetes.io/service-name: x}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: ["127.0.0.5"]
"#);
    println!("LOOPBACK: {:?}", out);
    let out = s.kubectl_stdin(&["apply", "-f", "-"], r#"
apiVersion: v1
kind: Service
metadata: {name: y, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 9080}]
"#);
    println!("SVC: {:?}", out);
}
