//! The controllers' side of the API server's bulk writes: many Tasks
//! created in one request (a `TaskList` POSTed to `tasks`), many bound in
//! one (a `BindingList` POSTed to `bindings`). Each item keeps its own
//! precondition and answer (a `Status`); a request carries at most
//! [`CHUNK`] items, and a longer batch goes in several.

use corral_api::Task;
use kube::core::Status;
use serde::Serialize;
use serde_json::{Value, json};

/// Items per request (the server takes up to 1,000).
pub const CHUNK: usize = 500;

/// What became of one item: written, or the API's answer why not.
pub type ItemResult = Result<(), Box<Status>>;

fn item_result(answer: Value) -> ItemResult {
    let status: Status = serde_json::from_value(answer).unwrap_or_else(|e| {
        Status::failure(&format!("an unreadable result: {e}"), "InternalError").with_code(500)
    });
    if status.is_success() || (200..300).contains(&status.code) {
        Ok(())
    } else {
        Err(status.boxed())
    }
}

/// How a batch of several requests goes on after an item is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusals {
    /// Every request is sent: each item has its result.
    GoOn,
    /// No further request after one with an item refused for a reason
    /// other than a conflict (409): its results are the last.
    Stop,
}

/// A bulk request's body: a list of `kind`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a, T> {
    api_version: &'a str,
    kind: &'a str,
    items: &'a [T],
}

/// POSTs `items` as a list of `kind` to `path`, [`CHUNK`] at a time, and
/// returns each item's result in order (fewer with [`Refusals::Stop`]). An
/// error of a whole request (the server unreachable, a 429) fails the call;
/// items already written stay written, and writing them again is a harmless
/// 409.
async fn post_items<T: Serialize>(
    client: &kube::Client,
    path: &str,
    kind: &str,
    items: &[T],
    refusals: Refusals,
) -> Result<Vec<ItemResult>, kube::Error> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(CHUNK) {
        // Encoded straight from the items, not through a `Value` of them.
        let body = serde_json::to_vec(&ListBody {
            api_version: "corral.dev/v1alpha1",
            kind,
            items: chunk,
        })
        .map_err(kube::Error::SerdeError)?;
        let req = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(kube::Error::HttpError)?;
        let mut answer: Value = client.request(req).await?;
        let statuses = match answer["items"].take() {
            Value::Array(items) if items.len() == chunk.len() => items,
            other => {
                let message = format!(
                    "a bulk request of {} items was answered with {} results",
                    chunk.len(),
                    other.as_array().map_or(0, Vec::len)
                );
                return Err(kube::Error::Api(
                    Status::failure(&message, "InternalError")
                        .with_code(500)
                        .boxed(),
                ));
            }
        };
        let first = results.len();
        results.extend(statuses.into_iter().map(item_result));
        let refused = results[first..]
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.code != 409));
        if refused && refusals == Refusals::Stop {
            break;
        }
    }
    Ok(results)
}

/// Creates `tasks` in namespace `ns` (see the module doc). After a request
/// with a task refused (not merely there already), no more are sent: the
/// results end there.
pub async fn create_tasks(
    client: &kube::Client,
    ns: &str,
    tasks: &[Task],
) -> Result<Vec<ItemResult>, kube::Error> {
    let path = format!("/apis/corral.dev/v1alpha1/namespaces/{ns}/tasks");
    post_items(client, &path, "TaskList", tasks, Refusals::Stop).await
}

/// One binding: the task (at the version the decision saw) and its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The task's name.
    pub task: String,
    /// Its resourceVersion when it was placed.
    pub resource_version: Option<String>,
    /// The node.
    pub node: String,
    /// The host ports assigned to it there, in its order.
    pub ports: Vec<corral_api::ports::TaskPort>,
    /// The node's address, if it reports one.
    pub host_ip: Option<String>,
}

/// Binds tasks of namespace `ns` (see the module doc); every binding has
/// its result.
pub async fn bind_tasks(
    client: &kube::Client,
    ns: &str,
    bindings: &[Binding],
) -> Result<Vec<ItemResult>, kube::Error> {
    let items: Vec<Value> = bindings
        .iter()
        .map(|b| {
            let mut item = json!({"metadata": {"name": b.task, "resourceVersion": b.resource_version},
                   "target": {"kind": "Node", "name": b.node}});
            if !b.ports.is_empty() {
                item["ports"] = json!(b.ports);
            }
            if let Some(ip) = &b.host_ip {
                item["hostIP"] = json!(ip);
            }
            item
        })
        .collect();
    let path = format!("/apis/corral.dev/v1alpha1/namespaces/{ns}/bindings");
    post_items(client, &path, "BindingList", &items, Refusals::GoOn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_written_when_its_status_says_success() {
        let ok = json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201});
        assert!(item_result(ok).is_ok());
        let e = item_result(
            json!({"status": "Failure", "code": 409, "reason": "Conflict",
                                   "message": "already bound"}),
        )
        .expect_err("a failure");
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            item_result(json!("nonsense")).expect_err("a failure").code,
            500
        );
    }
}
