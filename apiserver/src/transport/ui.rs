//! The web UI, served by the API server at `/ui/`.
//!
//! - The page and its code (`apiserver/ui/`, built into the binary: no CDN,
//!   no network at run time) are answered to anyone, like `/version`: they
//!   hold no data. They are sent with a Content-Security-Policy that lets the
//!   page load code and data from this server only, never be framed, and run
//!   no inline script.
//! - Everything the page shows it reads through the API itself, as the
//!   signed-in user (a bearer token the user gives, or the client
//!   certificate the browser presents), so authentication and authorization
//!   are the API's: a user sees only what they may read.
//! - `GET /ui/api/history` ([`history`]) is the one thing the API has no
//!   kind for: the last hour of the cluster's figures, sampled by this server
//!   from its watch cache. It is authorized as a path (the bootstrap
//!   `system:discovery` lets every authenticated user ask), then filtered:
//!   the cluster's figures only for a user who may list Nodes, a role's only
//!   for a user who may get that Role.

pub mod history;

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::server::request_info::RequestInfo;

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// The UI's files: path under `/ui/`, media type, content.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
    (
        "vendor/preact.module.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/preact.module.js"),
    ),
    (
        "vendor/hooks.module.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/hooks.module.js"),
    ),
    (
        "vendor/htm.module.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/htm.module.js"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.min.css"),
    ),
    (
        "vendor/LICENSES.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../ui/vendor/LICENSES.txt"),
    ),
];

/// What the page may load and do: this server only, no inline script, no
/// framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The UI file a GET (or HEAD) of `info` names, answered before
/// authentication; None for any other request.
pub fn asset(info: &RequestInfo) -> Option<Response<Body>> {
    if info.method != Method::GET && info.method != Method::HEAD {
        return None;
    }
    let rest = info.path.strip_prefix("/ui")?;
    let name = match rest {
        "" => "",
        r => r.strip_prefix('/')?,
    };
    // `/ui/api/…` is data: authenticated like the API.
    if name.starts_with("api/") {
        return None;
    }
    let (_, media, content) = ASSETS.iter().find(|(path, _, _)| *path == name)?;
    let mut r = Response::new(http_body_util::BodyExt::boxed(http_body_util::Full::new(
        bytes::Bytes::from_static(content),
    )));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::catalog::Catalog;

    fn info(method: Method, path: &str) -> RequestInfo {
        RequestInfo::new(&Catalog::standard(), &method, path, None, false)
    }

    #[test]
    fn the_page_and_its_code_are_served_with_a_strict_policy() {
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/vendor/preact.module.js"] {
            let r = asset(&info(Method::GET, path)).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(r.status(), StatusCode::OK);
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap_or_default();
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        }
        // Data, other methods and unknown files are not assets.
        assert!(asset(&info(Method::GET, "/ui/api/history")).is_none());
        assert!(asset(&info(Method::POST, "/ui/app.js")).is_none());
        assert!(asset(&info(Method::GET, "/ui/../etc/passwd")).is_none());
        assert!(asset(&info(Method::GET, "/uix")).is_none());
    }
}
