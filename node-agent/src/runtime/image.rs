//! Image references and image contents in containerd's content store: name
//! normalization (`busybox` → `docker.io/library/busybox:latest`), reading
//! an image's manifest (through an index when there is one) and its config,
//! and the chain ID naming the image's unpacked snapshot.

use std::collections::BTreeMap;

use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::services::v1::{content_client::ContentClient, images_client::ImagesClient};
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// containerd has no image of that name.
    #[error("image {0} is not present on this node")]
    NotFound(String),
    /// The image's content is missing or unreadable.
    #[error("image {name}: {detail}")]
    Broken {
        /// The image.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// containerd failed.
    #[error("containerd: {0}")]
    Rpc(#[from] tonic::Status),
}

/// What starting a container needs from its image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// The normalized name.
    pub name: String,
    /// The chain ID of the top layer: the name of the unpacked snapshot.
    pub chain_id: String,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// The image's entrypoint.
    pub entrypoint: Vec<String>,
    /// The image's default command.
    pub cmd: Vec<String>,
    /// The image's working directory.
    pub working_dir: String,
    /// The image's user (`USER`), empty when it names none.
    pub user: String,
}

/// The full reference Docker and containerd use for a short one:
/// `busybox` → `docker.io/library/busybox:latest`,
/// `team/app:1` → `docker.io/team/app:1`, `reg.io:5000/x` → `reg.io:5000/x:latest`.
pub fn normalize(reference: &str) -> String {
    let (first, rest) = match reference.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        Some(_) => ("docker.io".to_owned(), reference.to_owned()),
        None => ("docker.io".to_owned(), format!("library/{reference}")),
    };
    let last = rest.rsplit('/').next().unwrap_or(&rest);
    let tagged = last.contains(':') || rest.contains('@');
    let tag = if tagged { "" } else { ":latest" };
    format!("{first}/{rest}{tag}")
}

/// The chain ID of a layer stack: `chain(L0) = diff(L0)`,
/// `chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln))`.
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut ids = diff_ids.iter();
    let mut chain = ids.next()?.clone();
    for diff in ids {
        let digest = Sha256::digest(format!("{chain} {diff}").as_bytes());
        chain = format!("sha256:{}", hex(&digest));
    }
    Some(chain)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    config: Option<RunConfig>,
    rootfs: RootFs,
}

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

fn with_namespace<T>(msg: T, namespace: &str) -> Result<tonic::Request<T>, tonic::Status> {
    let mut req = tonic::Request::new(msg);
    let ns = namespace
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("namespace is not a valid header value"))?;
    req.metadata_mut().insert("containerd-namespace", ns);
    Ok(req)
}

async fn read_blob(
    channel: &Channel,
    namespace: &str,
    digest: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = ContentClient::new(channel.clone())
        .read(with_namespace(
            ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            },
            namespace,
        )?)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?.data);
    }
    Ok(out)
}

/// Reads `reference`'s manifest and config from containerd in `namespace`.
pub async fn resolve(
    channel: &Channel,
    namespace: &str,
    reference: &str,
) -> Result<ImageConfig, ImageError> {
    let name = normalize(reference);
    let broken = |detail: String| ImageError::Broken {
        name: name.clone(),
        detail,
    };
    let image = match ImagesClient::new(channel.clone())
        .get(with_namespace(
            GetImageRequest { name: name.clone() },
            namespace,
        )?)
        .await
    {
        Ok(r) => r.into_inner().image,
        Err(s) if s.code() == tonic::Code::NotFound => return Err(ImageError::NotFound(name)),
        Err(s) => return Err(s.into()),
    };
    let target = image
        .and_then(|i| i.target)
        .ok_or_else(|| broken("no target descriptor".into()))?;
    let mut digest = target.digest;
    let mut blob = read_blob(channel, namespace, &digest).await?;
    if is_index(&target.media_type) {
        let index: Index =
            serde_json::from_slice(&blob).map_err(|e| broken(format!("index: {e}")))?;
        let pick = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or(index.manifests.first())
            .ok_or_else(|| broken("the index lists no manifest".into()))?;
        if is_index(&pick.media_type) {
            return Err(broken("nested indexes are not supported".into()));
        }
        digest = pick.digest.clone();
        blob = read_blob(channel, namespace, &digest).await?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&blob).map_err(|e| broken(format!("manifest {digest}: {e}")))?;
    let config_blob = read_blob(channel, namespace, &manifest.config.digest).await?;
    let config: Config =
        serde_json::from_slice(&config_blob).map_err(|e| broken(format!("config: {e}")))?;
    let chain_id = chain_id(&config.rootfs.diff_ids)
        .ok_or_else(|| broken("the image has no layers".into()))?;
    let run = config.config.unwrap_or_default();
    Ok(ImageConfig {
        name,
        chain_id,
        env: run.env.unwrap_or_default(),
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
    })
}

/// The process arguments, Docker's rule: the task's command replaces the
/// entrypoint (and drops the image's cmd); the task's args replace the cmd.
pub fn process_args(image: &ImageConfig, command: &[String], args: &[String]) -> Vec<String> {
    let entry = if command.is_empty() {
        &image.entrypoint
    } else {
        &command.to_vec()
    };
    let rest = match (command.is_empty(), args.is_empty()) {
        (_, false) => args.to_vec(),
        (true, true) => image.cmd.clone(),
        (false, true) => Vec::new(),
    };
    entry.iter().cloned().chain(rest).collect()
}

/// The image's environment with the task's variables laid over it.
pub fn merge_env(image: &[String], task: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = image
        .iter()
        .filter(|kv| {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !task.contains_key(k)
        })
        .cloned()
        .collect();
    out.extend(task.iter().map(|(k, v)| format!("{k}={v}")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_references_are_normalized_like_docker_does() {
        for (short, full) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("team/app", "docker.io/team/app:latest"),
            (
                "docker.io/library/testbox:latest",
                "docker.io/library/testbox:latest",
            ),
            ("reg.io:5000/x", "reg.io:5000/x:latest"),
            ("localhost/x:2", "localhost/x:2"),
            ("reg.io/x@sha256:ab", "reg.io/x@sha256:ab"),
        ] {
            assert_eq!(normalize(short), full, "{short}");
        }
    }

    #[test]
    fn the_chain_id_of_one_layer_is_its_diff_id_and_grows_by_hashing() {
        let l0 = "sha256:aaaa".to_owned();
        assert_eq!(chain_id(std::slice::from_ref(&l0)), Some(l0.clone()));
        let two = chain_id(&[l0.clone(), "sha256:bbbb".into()]).expect("two layers");
        let expected = format!(
            "sha256:{}",
            hex(&Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(two, expected);
        assert_eq!(chain_id(&[]), None);
    }

    #[test]
    fn arguments_follow_dockers_entrypoint_and_cmd_rule() {
        let image = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            ..ImageConfig::default()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(process_args(&image, &[], &[]), s(&["/entry", "default"]));
        assert_eq!(process_args(&image, &[], &s(&["x"])), s(&["/entry", "x"]));
        assert_eq!(process_args(&image, &s(&["sh"]), &[]), s(&["sh"]));
        assert_eq!(
            process_args(&image, &s(&["sh", "-c"]), &s(&["echo"])),
            s(&["sh", "-c", "echo"])
        );
    }

    #[test]
    fn task_variables_override_the_images() {
        let task = BTreeMap::from([("A".to_owned(), "task".to_owned())]);
        assert_eq!(
            merge_env(&["A=image".into(), "PATH=/bin".into()], &task),
            vec!["PATH=/bin".to_owned(), "A=task".to_owned()]
        );
    }
}
