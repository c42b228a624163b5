//! `corral endpoints JOB`: where a service job's instances are reached, from
//! its EndpointSlices (what any Kubernetes discovery client reads), and the
//! same table in `corral describe job`.

use std::fmt::Write as _;

use anyhow::Result;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

use super::{Ctx, column_widths, format_row, server_error};

/// One row per endpoint: task, address, ports, ready, serving,
/// terminating, node; sorted by task.
pub fn format_endpoints(slices: &[EndpointSlice]) -> String {
    let yes_no = |b: Option<bool>| if b == Some(true) { "yes" } else { "no" }.to_owned();
    let mut body = Vec::new();
    for s in slices {
        let ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .map(|p| match (&p.name, p.port) {
                (Some(n), Some(port)) if !n.is_empty() => format!("{n}={port}"),
                (_, Some(port)) => port.to_string(),
                _ => "<all>".into(),
            })
            .collect();
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            body.push(vec![
                e.target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_else(|| "<none>".into()),
                e.addresses.join(","),
                if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                },
                yes_no(c.ready),
                yes_no(c.serving),
                yes_no(c.terminating),
                e.node_name.clone().unwrap_or_else(|| "<none>".into()),
            ]);
        }
    }
    if body.is_empty() {
        return "<none>\n".into();
    }
    body.sort();
    let mut rows = vec![
        [
            "TASK",
            "ADDRESS",
            "PORTS",
            "READY",
            "SERVING",
            "TERMINATING",
            "NODE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(body);
    let widths = column_widths(&rows);
    let mut out = String::new();
    for r in &rows {
        let _ = writeln!(out, "{}", format_row(r, &widths));
    }
    out
}

/// The EndpointSlices of job `job` in the context's namespace.
pub async fn slices_of(ctx: &Ctx, job: &str) -> Result<Vec<EndpointSlice>> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(api
        .list(&ListParams::default().labels(&format!(
            "{}={job}",
            corral_api::discovery::SERVICE_NAME_LABEL
        )))
        .await
        .map_err(server_error)?
        .items)
}

/// Runs `corral endpoints JOB`.
pub async fn run(ctx: &Ctx, job: &str) -> Result<()> {
    out!("{}", format_endpoints(&slices_of(ctx, job).await?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_is_a_row_with_its_ports_and_conditions() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 31001, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.8"], "nodeName": "n2", "conditions": {"ready": false, "serving": true, "terminating": true},
                 "targetRef": {"kind": "Task", "name": "web-1-0"}},
                {"addresses": ["10.0.0.7"], "nodeName": "n1", "conditions": {"ready": true, "serving": true, "terminating": false},
                 "targetRef": {"kind": "Task", "name": "web-0-0"}}
            ]}))
        .expect("a slice");
        let text = format_endpoints(&[slice]);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec![
                    "TASK",
                    "ADDRESS",
                    "PORTS",
                    "READY",
                    "SERVING",
                    "TERMINATING",
                    "NODE"
                ],
                vec![
                    "web-0-0",
                    "10.0.0.7",
                    "http=31001",
                    "yes",
                    "yes",
                    "no",
                    "n1"
                ],
                vec![
                    "web-1-0",
                    "10.0.0.8",
                    "http=31001",
                    "no",
                    "yes",
                    "yes",
                    "n2"
                ],
            ]
        );
        assert_eq!(format_endpoints(&[]), "<none>\n");
    }
}
