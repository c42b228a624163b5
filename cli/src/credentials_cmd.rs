//! `corral credentials`: kubeconfigs with client certificates signed by the
//! cluster's CA, issued on the control-plane machine (it reads the CA key
//! under `$CORRAL_HOME/pki`, which `corral server` keeps, 0600).
//!
//! - `corral credentials node NAME --out FILE`: user `system:node:NAME` in
//!   group `system:nodes`: what one agent needs, and no more (the Node
//!   authorizer and NodeRestriction confine it to node NAME's objects).
//! - `corral credentials user NAME [--group G]… --out FILE`: a person or a
//!   component, whose rights RBAC bindings then grant.
//!
//! The file holds a private key: it is written 0600 and never overwritten
//! unless `--force` says so.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use corral_apiserver::transport::auth::{NODE_USER_PREFIX, NODES_GROUP};
use corral_apiserver::transport::pki::{Pki, write_private};

use crate::store_cmd::home_dir;

/// What to issue.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// A node agent's kubeconfig: user `system:node:NAME`, group `system:nodes`.
    Node {
        /// The node's name (a DNS-1123 subdomain, as Node names are).
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// A person's or a component's kubeconfig: user NAME in the groups given.
    User {
        /// The user name RBAC bindings name.
        name: String,
        /// Groups the user is in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// Options every credential takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Where to write the kubeconfig (0600).
    #[arg(long)]
    out: PathBuf,
    /// The API server's URL written into it (default: the one in
    /// `$CORRAL_HOME/kubeconfig`).
    #[arg(long)]
    server: Option<String>,
    /// How many days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace `--out` if it exists.
    #[arg(long)]
    force: bool,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    home: Option<PathBuf>,
}

/// The user and groups a credential names, checked.
pub fn identity(cmd: &CredentialsCommand) -> Result<(String, Vec<String>)> {
    match cmd {
        CredentialsCommand::Node { name, .. } => {
            if !corral_api::validation::is_dns1123_subdomain(name) {
                bail!(
                    "{name:?} is not a node name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
                );
            }
            Ok((
                format!("{NODE_USER_PREFIX}{name}"),
                vec![NODES_GROUP.to_owned()],
            ))
        }
        CredentialsCommand::User { name, groups, .. } => {
            let printable = |s: &str| !s.is_empty() && s.chars().all(|c| !c.is_control());
            if !printable(name) || name.starts_with(NODE_USER_PREFIX) {
                bail!(
                    "{name:?} is not a user name for people (empty, control characters, or a node's: use `corral credentials node`)"
                );
            }
            if let Some(g) = groups.iter().find(|g| !printable(g) || *g == NODES_GROUP) {
                bail!(
                    "{g:?} is not a group for users (empty, control characters, or the nodes' group)"
                );
            }
            Ok((name.clone(), groups.clone()))
        }
    }
}

/// The API server URL of an existing kubeconfig.
fn server_of(kubeconfig: &Path) -> Result<String> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {} (or pass --server)", kubeconfig.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    kc.clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .with_context(|| format!("{} names no server (pass --server)", kubeconfig.display()))
}

pub fn run(cmd: CredentialsCommand) -> Result<()> {
    let (user, groups) = identity(&cmd)?;
    let common = match &cmd {
        CredentialsCommand::Node { common, .. } | CredentialsCommand::User { common, .. } => common,
    };
    if common.days == 0 {
        bail!("--days must be at least 1");
    }
    if common.out.exists() && !common.force {
        bail!(
            "{} exists; pass --force to replace it",
            common.out.display()
        );
    }
    let home = home_dir(common.home.clone())?;
    let pki = Pki::load(&home.join("pki")).context("reading the cluster's CA")?;
    let server = match &common.server {
        Some(s) => s.clone(),
        None => server_of(&home.join("kubeconfig"))?,
    };
    let (cert, key) = pki
        .issue_client(
            &user,
            &groups,
            jiff::Timestamp::now(),
            jiff::SignedDuration::from_hours(24 * i64::from(common.days)),
        )
        .context("issuing the certificate")?;
    let kubeconfig = pki.client_kubeconfig(&server, &user, &cert, &key);
    write_private(&common.out, kubeconfig.as_bytes())
        .with_context(|| format!("writing {}", common.out.display()))?;
    outln!(
        "wrote {} for user {user}{} (valid {} days)",
        common.out.display(),
        if groups.is_empty() {
            String::new()
        } else {
            format!(" in {}", groups.join(", "))
        },
        common.days
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: CredentialsCommand,
    }

    fn parse(args: &[&str]) -> CredentialsCommand {
        let mut argv = vec!["credentials"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").cmd
    }

    #[test]
    fn nodes_and_users_get_the_names_kubernetes_reads() {
        let node = parse(&["node", "n1", "--out", "x"]);
        assert_eq!(
            identity(&node).expect("a node"),
            ("system:node:n1".to_owned(), vec!["system:nodes".to_owned()])
        );
        let user = parse(&["user", "alice", "--group", "team-a", "--out", "x"]);
        assert_eq!(
            identity(&user).expect("a user"),
            ("alice".to_owned(), vec!["team-a".to_owned()])
        );
        for bad in [
            &["node", "N_1", "--out", "x"][..],
            &["node", "a/b", "--out", "x"],
            &["user", "system:node:n1", "--out", "x"],
            &["user", "bob", "--group", "system:nodes", "--out", "x"],
            &["user", "bob\n", "--out", "x"],
        ] {
            assert!(identity(&parse(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_credential_authenticates_as_its_user_and_is_private() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        Pki::load_or_create(&home.join("pki"), &[])?;
        let out = dir.path().join("n1.kubeconfig");
        let args = |force: bool| {
            let mut a = vec![
                "node".to_owned(),
                "n1".to_owned(),
                format!("--out={}", out.display()),
                "--server=https://127.0.0.1:6443".to_owned(),
                format!("--home={}", home.display()),
            ];
            if force {
                a.push("--force".into());
            }
            a
        };
        let argv: Vec<String> = args(false);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        run(parse(&refs))?;
        let mode = std::fs::metadata(&out)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The certificate names the node as Kubernetes reads it.
        let kc = kube::config::Kubeconfig::from_yaml(&std::fs::read_to_string(&out)?)?;
        let data = kc.auth_infos[0]
            .auth_info
            .as_ref()
            .and_then(|a| a.client_certificate_data.clone())
            .context("a client certificate")?;
        use base64::Engine;
        let pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data)?)?;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body)?;
        let id = corral_apiserver::transport::auth::cert_identity(&der).context("readable")?;
        assert_eq!(id.common_name, "system:node:n1");
        assert_eq!(id.organizations, vec!["system:nodes".to_owned()]);
        // Not replaced by accident.
        assert!(run(parse(&refs)).is_err());
        let forced: Vec<String> = args(true);
        let refs: Vec<&str> = forced.iter().map(String::as_str).collect();
        run(parse(&refs))?;
        Ok(())
    }
}
