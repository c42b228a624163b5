//! `corral get`: tables like kubectl's (the server's printer columns, asked
//! for as `meta.k8s.io/v1` Tables), `-o wide|yaml|json|name`, `-l`,
//! `--field-selector`, `-A`, and `-w` (a watch whose events carry table rows).

use anyhow::{Result, bail};
use clap::Args;
use futures::{AsyncBufReadExt, TryStreamExt};
use serde_json::Value;

use super::{Ctx, column_widths, format_row, ref_name};

/// The Accept header that asks for a Table.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// `corral get` options.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind (`tasks`, `jobs`, `nodes`, `tk`, `corral` for every Corral kind, or a comma list).
    pub kind: String,
    /// Names (all when none).
    pub names: Vec<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector (`app=web,tier!=revocable`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`spec.nodeName=n1`, `status.phase=RUNNING`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// `wide`, `yaml`, `json` or `name`.
    #[arg(short = 'o', long, value_parser = ["wide", "yaml", "json", "name"])]
    pub output: Option<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Omit the header row.
    #[arg(long)]
    pub no_headers: bool,
}

fn query(args: &GetArgs, extra: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(l) = &args.selector {
        q.append_pair("labelSelector", l);
    }
    if let Some(f) = &args.field_selector {
        q.append_pair("fieldSelector", f);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Runs `corral get`.
pub async fn run(ctx: &Ctx, args: &GetArgs) -> Result<()> {
    let kinds = ctx.resolve(&args.kind)?;
    if args.watch && kinds.len() > 1 {
        bail!("you may only watch one kind at a time");
    }
    if !args.names.is_empty() && kinds.len() > 1 {
        bail!("names may be given with one kind only");
    }
    let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
    let mut objects: Vec<Value> = Vec::new();
    let mut printed_any = false;
    for desc in &kinds {
        match args.output.as_deref() {
            Some("yaml" | "json" | "name") => {
                let items = fetch_objects(ctx, desc, ns, args).await?;
                if args.output.as_deref() == Some("name") {
                    for o in &items {
                        outln!(
                            "{}",
                            ref_name(desc, o["metadata"]["name"].as_str().unwrap_or_default())
                        );
                    }
                } else {
                    objects.extend(items);
                }
            }
            _ => {
                let printed = print_table(ctx, desc, ns, args, printed_any).await?;
                printed_any |= printed;
            }
        }
    }
    match args.output.as_deref() {
        Some("yaml" | "json") => {
            let doc = if objects.len() == 1 && !args.names.is_empty() {
                objects.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}})
            };
            if args.output.as_deref() == Some("json") {
                outln!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                out!("{}", serde_saphyr::to_string(&doc)?);
            }
        }
        Some("name") => {}
        _ if !printed_any && !args.watch => match ns {
            Some(ns) if kinds.iter().any(|d| d.namespaced) => {
                eprintln!("No resources found in {ns} namespace.")
            }
            _ => eprintln!("No resources found"),
        },
        _ => {}
    }
    Ok(())
}

async fn fetch_objects(
    ctx: &Ctx,
    desc: &corral_apiserver::kinds::catalog::ResourceDesc,
    ns: Option<&str>,
    args: &GetArgs,
) -> Result<Vec<Value>> {
    let base = ctx.collection_url(desc, ns);
    let with_kind = |mut v: Value| {
        v["apiVersion"] = Value::String(desc.api_version());
        v["kind"] = Value::String(desc.kind.to_owned());
        v
    };
    if args.names.is_empty() {
        let list = ctx
            .get_json(&format!("{base}?{}", query(args, &[])), "application/json")
            .await?;
        Ok(list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(with_kind)
            .collect())
    } else {
        let mut out = Vec::new();
        for n in &args.names {
            out.push(with_kind(
                ctx.get_json(&format!("{base}/{n}"), "application/json")
                    .await?,
            ));
        }
        Ok(out)
    }
}

/// The header and cell rows of a Table, honouring `-o wide` and `-A`.
pub fn table_rows(
    table: &Value,
    wide: bool,
    with_namespace: bool,
) -> (Vec<String>, Vec<Vec<String>>) {
    let defs = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| wide || d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(
        shown
            .iter()
            .map(|i| defs[*i]["name"].as_str().unwrap_or_default().to_uppercase()),
    );
    let rows = table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let mut line = Vec::new();
                    if with_namespace {
                        line.push(
                            r["object"]["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        );
                    }
                    line.extend(shown.iter().map(|i| cell(&r["cells"][*i])));
                    line
                })
                .collect()
        })
        .unwrap_or_default();
    (header, rows)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "<none>".to_owned(),
        Value::String(s) if s.is_empty() => "<none>".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints one kind's table; false when it had no rows.
async fn print_table(
    ctx: &Ctx,
    desc: &corral_apiserver::kinds::catalog::ResourceDesc,
    ns: Option<&str>,
    args: &GetArgs,
    after_another: bool,
) -> Result<bool> {
    let wide = args.output.as_deref() == Some("wide");
    let with_ns = args.all_namespaces && desc.namespaced;
    let base = ctx.collection_url(desc, ns);
    let table = if args.names.is_empty() {
        ctx.get_json(&format!("{base}?{}", query(args, &[])), TABLE)
            .await?
    } else {
        let mut merged: Option<Value> = None;
        for n in &args.names {
            let t = ctx.get_json(&format!("{base}/{n}"), TABLE).await?;
            match &mut merged {
                None => merged = Some(t),
                Some(m) => {
                    let rows = t["rows"].as_array().cloned().unwrap_or_default();
                    if let Some(all) = m["rows"].as_array_mut() {
                        all.extend(rows);
                    }
                }
            }
        }
        merged.unwrap_or(Value::Null)
    };
    let (header, rows) = table_rows(&table, wide, with_ns);
    let mut all = Vec::new();
    if !args.no_headers && (!rows.is_empty() || args.watch) {
        all.push(header);
    }
    let had_rows = !rows.is_empty();
    if had_rows && after_another {
        // kubectl separates the tables of several kinds with a blank line.
        outln!();
    }
    all.extend(rows);
    let mut widths = column_widths(&all);
    for r in &all {
        outln!("{}", format_row(r, &widths));
    }
    if args.watch {
        let rv = table["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_owned();
        let mut extra = vec![
            ("watch", "true".to_owned()),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "false".to_owned()),
        ];
        if let Some(n) = args.names.first() {
            extra.push(("fieldSelector", format!("metadata.name={n}")));
        }
        let url = format!("{base}?{}", query(args, &extra));
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, TABLE)
            .body(Vec::new())?;
        let stream = ctx
            .client
            .request_stream(req)
            .await
            .map_err(super::server_error)?;
        let mut lines = stream.lines();
        while let Some(line) = lines.try_next().await? {
            let ev: Value = serde_json::from_str(&line)?;
            match ev["type"].as_str() {
                Some("ERROR") => bail!(
                    "the watch ended: {}",
                    ev["object"]["message"].as_str().unwrap_or("unknown error")
                ),
                Some("BOOKMARK") => continue,
                _ => {}
            }
            let (_, rows) = table_rows(&ev["object"], wide, with_ns);
            for r in rows {
                for (i, c) in r.iter().enumerate() {
                    if widths.len() <= i {
                        widths.push(c.len());
                    }
                }
                outln!("{}", format_row(&r, &widths));
            }
        }
    }
    Ok(had_rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wide_columns_show_only_with_wide_and_namespaces_only_with_all() {
        let t = json!({"columnDefinitions": [
            {"name": "Name", "priority": 0}, {"name": "Phase", "priority": 0}, {"name": "Tier", "priority": 1}],
            "rows": [{"cells": ["a", "RUNNING", "preferred"], "object": {"metadata": {"namespace": "web"}}},
                     {"cells": ["b", null, ""], "object": {"metadata": {"namespace": "web"}}}]});
        let (h, rows) = table_rows(&t, false, false);
        assert_eq!(h, ["NAME", "PHASE"]);
        assert_eq!(rows[0], ["a", "RUNNING"]);
        assert_eq!(rows[1], ["b", "<none>"]);
        let (h, rows) = table_rows(&t, true, true);
        assert_eq!(h, ["NAMESPACE", "NAME", "PHASE", "TIER"]);
        assert_eq!(rows[0], ["web", "a", "RUNNING", "preferred"]);
    }
}
