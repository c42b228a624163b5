//! `corral store`: load manifests into a store and list what it holds.
//!
//! Keys follow the API server's layout: `/registry/corral.dev/<plural>/[<namespace>/]<name>`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use corral_store::embedded::EmbeddedStore;
use corral_store::etcd::{EtcdStore, EtcdTls};
use corral_store::{RangeRequest, Store, StoreError};

use crate::manifests;

/// Options shared by the store commands.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// `embedded` (SQLite under $CORRAL_HOME), `embedded:PATH`, or `etcd://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, env = "CORRAL_STORE", default_value = "embedded", global = true)]
    store: String,
    #[command(flatten)]
    etcd_tls: EtcdTlsArgs,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Validate manifests and write them (create, or update in place).
    Load {
        /// Files or directories of YAML manifests (`-` for stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List keys with their revisions.
    List {
        /// Key prefix.
        #[arg(default_value = "/registry/")]
        prefix: String,
    },
}

/// The home directory: `--home`, `$CORRAL_HOME`, or `~/.corral`.
pub fn home_dir(home: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(h) = home {
        return Ok(h);
    }
    let base = std::env::var_os("HOME").context("neither --home, CORRAL_HOME nor HOME is set")?;
    Ok(PathBuf::from(base).join(".corral"))
}

/// TLS to etcd, as kube-apiserver's flags of the same names.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdTlsArgs {
    /// The CA that signed etcd's serving certificate: speak TLS to etcd.
    #[arg(long, global = true)]
    pub etcd_cafile: Option<PathBuf>,
    /// The client certificate presented to etcd (with --etcd-keyfile).
    #[arg(long, global = true, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// The client certificate's key (with --etcd-certfile).
    #[arg(long, global = true, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The TLS settings, read from their files (none without --etcd-cafile).
    fn load(&self) -> Result<Option<EtcdTls>> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let Some(ca) = &self.etcd_cafile else {
            if self.etcd_certfile.is_some() {
                bail!("--etcd-certfile needs --etcd-cafile");
            }
            return Ok(None);
        };
        Ok(Some(EtcdTls {
            ca_pem: read(ca)?,
            cert_pem: self
                .etcd_certfile
                .as_ref()
                .map(read)
                .transpose()?
                .unwrap_or_default(),
            key_pem: self
                .etcd_keyfile
                .as_ref()
                .map(read)
                .transpose()?
                .unwrap_or_default(),
        }))
    }
}

/// Opens `embedded` (`$CORRAL_HOME/store.db`), `embedded:PATH` or
/// `etcd://HOST:PORT[,…]` (over TLS with `tls`'s files).
pub async fn open_store(
    store: &str,
    home: &std::path::Path,
    tls: &EtcdTlsArgs,
) -> Result<Arc<dyn Store>> {
    let embedded_path = match store {
        "embedded" => Some(home.join("store.db")),
        s => s.strip_prefix("embedded:").map(PathBuf::from),
    };
    if let Some(path) = embedded_path {
        let s =
            EmbeddedStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
        return Ok(Arc::new(s));
    }
    if let Some(rest) = store.strip_prefix("etcd://") {
        let tls = tls.load()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = rest.split(',').map(|e| format!("{scheme}://{e}")).collect();
        let store = match &tls {
            Some(tls) => EtcdStore::connect_tls(&endpoints, tls).await?,
            None => EtcdStore::connect(&endpoints).await?,
        };
        return Ok(Arc::new(store));
    }
    bail!("unknown store {store:?}: use `embedded`, `embedded:PATH` or `etcd://HOST:PORT`")
}

pub async fn run(args: StoreArgs) -> Result<()> {
    let store = open_store(&args.store, &home_dir(args.home)?, &args.etcd_tls).await?;
    match args.command {
        StoreCommand::Load { files } => load(store.as_ref(), &files).await,
        StoreCommand::List { prefix } => list(store.as_ref(), &prefix).await,
    }
}

fn key_of(m: &manifests::Manifest) -> Result<String> {
    let info = m.object.info();
    let meta = m.object.metadata();
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{}: no metadata.name", m.source))?;
    Ok(match (info.namespaced, meta.namespace.as_deref()) {
        (true, Some(ns)) => format!("/registry/corral.dev/{}/{ns}/{name}", info.plural),
        (true, None) => format!("/registry/corral.dev/{}/default/{name}", info.plural),
        (false, _) => format!("/registry/corral.dev/{}/{name}", info.plural),
    })
}

async fn load(store: &dyn Store, files: &[PathBuf]) -> Result<()> {
    let (mut docs, skipped) = manifests::read_corral(files)?;
    for (source, kind) in skipped {
        outln!(
            "{source}: skipped {kind} (only Corral kinds are loaded; apply it through the API server)"
        );
    }
    // Roles and quotas before the objects that name them.
    docs.sort_by_key(|d| {
        corral_api::object::KINDS
            .iter()
            .position(|k| k.kind == d.object.info().kind)
    });
    for doc in &docs {
        let errors = doc.object.validate();
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|e| format!("  * {e}")).collect();
            bail!(
                "{}: {} is invalid:\n{}",
                doc.source,
                doc.describe(),
                list.join("\n")
            );
        }
    }
    for doc in &docs {
        let key = key_of(doc)?;
        let value = serde_json::to_vec(&doc.object.to_value()?)?;
        let verb = loop {
            match store.get(&key).await? {
                None => match store.create(&key, value.clone()).await {
                    Ok(kv) => break format!("created at revision {}", kv.mod_revision),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e.into()),
                },
                Some(cur) if cur.value == value => {
                    break format!("unchanged (revision {})", cur.mod_revision);
                }
                Some(cur) => match store.update(&key, value.clone(), cur.mod_revision).await {
                    Ok(kv) => break format!("updated at revision {}", kv.mod_revision),
                    Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                },
            }
        };
        outln!("{}: {verb}", doc.describe());
    }
    Ok(())
}

async fn list(store: &dyn Store, prefix: &str) -> Result<()> {
    let mut req = RangeRequest::prefix(prefix).limit(500);
    outln!("{:<64} {:>8} {:>8}", "KEY", "CREATED", "MODIFIED");
    loop {
        let page = store.range(req.clone()).await?;
        for kv in &page.items {
            outln!(
                "{:<64} {:>8} {:>8}",
                kv.key,
                kv.create_revision,
                kv.mod_revision
            );
        }
        match page.items.last() {
            Some(last) if page.more => req = req.after(last.key.clone()).at(page.revision),
            _ => break,
        }
    }
    outln!("revision {}", store.current_revision().await?);
    Ok(())
}
