//! A task's host ports in its launch: each assigned port becomes
//! `PORT_<NAME>` and `PORT<i>` (in the order its job names them, as
//! Marathon sets them), and `$(VAR)` in its command and arguments is
//! replaced by the value of its variable `VAR` (Kubernetes' expansion: an
//! unknown name stays as written, `$$` is a literal `$`).
//!
//! The ports come from the task's status, written by its binding; the
//! values are plain numbers and the expansion never reaches a shell, so no
//! task-controlled string becomes anything but the task's own argument.

use std::collections::HashMap;

use corral_api::job::{ContainerSpec, EnvVar};
use corral_api::ports::{TaskPort, env_name};

/// Adds the port variables of `ports` to `container`'s environment, then
/// expands `$(VAR)` in its command and arguments.
pub fn expose(container: &mut ContainerSpec, ports: &[TaskPort]) {
    for (i, p) in ports.iter().enumerate() {
        for name in [env_name(&p.name), format!("PORT{i}")] {
            container.env.retain(|e| e.name != name);
            container.env.push(EnvVar {
                name,
                value: p.port.to_string(),
                value_from: None,
            });
        }
    }
    let vars: HashMap<&str, &str> = container
        .env
        .iter()
        .filter(|e| e.value_from.is_none())
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    let command: Vec<String> = container.command.iter().map(|a| expand(a, &vars)).collect();
    let args: Vec<String> = container.args.iter().map(|a| expand(a, &vars)).collect();
    container.command = command;
    container.args = args;
}

/// `s` with `$(NAME)` replaced by `vars[NAME]` where it is set, `$$` as `$`.
pub fn expand(s: &str, vars: &HashMap<&str, &str>) -> String {
    if !s.contains('$') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, port: u16) -> TaskPort {
        TaskPort {
            name: name.into(),
            port,
        }
    }

    #[test]
    fn ports_become_variables_and_expand_in_command_and_args() {
        let mut c: ContainerSpec = serde_json::from_value(serde_json::json!({
            "image": "busybox",
            "command": ["httpd", "-f", "-p", "$(PORT_HTTP)"],
            "args": ["--admin=$(PORT1)", "$(GREETING) on $(PORT0)", "$$(PORT_HTTP)", "$(NOPE)", "$", "a$b", "$(unclosed"],
            "env": [{"name": "GREETING", "value": "hello"}, {"name": "PORT0", "value": "stale"}],
        }))
        .expect("a container");
        expose(&mut c, &[port("http", 31000), port("admin-grpc", 9090)]);
        assert_eq!(c.command, ["httpd", "-f", "-p", "31000"]);
        assert_eq!(
            c.args,
            [
                "--admin=9090",
                "hello on 31000",
                "$(PORT_HTTP)",
                "$(NOPE)",
                "$",
                "a$b",
                "$(unclosed"
            ]
        );
        let env: Vec<(&str, &str)> = c
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("GREETING", "hello"),
                ("PORT_HTTP", "31000"),
                ("PORT0", "31000"),
                ("PORT_ADMIN_GRPC", "9090"),
                ("PORT1", "9090"),
            ]
        );
    }

    #[test]
    fn a_task_without_ports_is_launched_as_written() {
        let mut c: ContainerSpec = serde_json::from_value(serde_json::json!({
            "image": "busybox", "command": ["sh", "-c", "echo $(HOME) $$"],
        }))
        .expect("a container");
        let before = c.clone();
        expose(&mut c, &[]);
        assert_eq!(c.command, ["sh", "-c", "echo $(HOME) $"]);
        assert_eq!(c.env, before.env);
    }
}
