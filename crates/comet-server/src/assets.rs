//! The browser side, built into the binary: the client `comet.js` (an ES
//! module), its TypeScript declarations, and the built-in page at `/`
//! (`index.html`, `app.js`, `style.css`, the icon). The files live in
//! `clients/js/`.
//! No CDN, no build step: what is in the repository is what is served.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "comet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../clients/js/comet.js"),
    },
    Asset {
        name: "comet.d.ts",
        content_type: "application/typescript; charset=utf-8",
        body: include_str!("../../../clients/js/comet.d.ts"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../clients/js/page/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../clients/js/page/style.css"),
    },
    // Browsers ask for /favicon.ico on every page of the origin.
    Asset {
        name: "favicon.ico",
        content_type: "image/svg+xml",
        body: include_str!("../../../clients/js/page/favicon.svg"),
    },
];

const PAGE: &str = include_str!("../../../clients/js/page/index.html");

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small files: always revalidate, so an upgrade shows at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Adds `GET /` (the page) and a route for each of its files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(mut router: Router<S>) -> Router<S> {
    router = router.route(
        "/",
        get(|| async { serve("text/html; charset=utf-8", PAGE) }),
    );
    for asset in ASSETS {
        router = router.route(
            &format!("/{}", asset.name),
            get(move || async move { serve(asset.content_type, asset.body) }),
        );
    }
    router
}
