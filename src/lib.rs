//! Herald: a real-time notification gateway.
//!
//! Data flows one way:
//!
//! ```text
//! publish (HTTP or FCALL herald_publish)
//!   → engine     one atomic step: store in the inbox, count, publish    engine/
//!   → pub/sub    each node gets only its own users' channels           engine/redis/pubsub.rs
//!   → hub        a typed live event → the user's streams here;         hub/
//!                encoded once (wire/), queued per stream               hub/queue.rs
//!   → SSE body   replay after the cursor, then live, no gap/duplicate   sse.rs
//! ```
//!
//! Nothing flows back up except the hub telling the engine which users'
//! channels to subscribe to.
//!
//! Modules are layered, and a module imports only from layers below its
//! own (`tests/it/layers.rs` checks it), lowest first:
//!
//! | layer | module | job |
//! | --- | --- | --- |
//! | 0 | [`clock`] | wall-clock reads, RFC 3339; the last-seen marks behind `/healthz` and `/readyz` |
//! | 0 | [`domain`] | `UserId`, `TopicName`, `EntryId`, the cursor, notifications, preferences, live events |
//! | 1 | [`config`] | layered settings, validated with messages naming the key |
//! | 2 | [`telemetry`] | log subscriber |
//! | 2 | [`metrics`] | Prometheus metrics |
//! | 2 | [`rate_limit`] | the per-publisher publish rate and the per-user request rate |
//! | 3 | [`wire`] | every byte a client receives: SSE frames, a notification's JSON |
//! | 4 | [`hub`] | this node's registry of streams, their queues, the node-wide tick |
//! | 5 | [`engine`] | the `Engine` trait; `memory` and `redis`; they hand the hub typed events |
//! | 6 | [`push`] | the Web Push worker: claims queued pushes, encrypts, signs, sends |
//! | 7 | [`node`] | a node assembled from settings: hub, engine, node tasks |
//! | 8 | [`sse`] | one SSE response body: replay from the engine, then live from the hub |
//! | 9 | [`error`] | every client-visible error and its HTTP status |
//! | 10 | [`auth`] | JWT verification, `User` / `Publisher` extractors |
//! | 11 | [`routes`] | HTTP handlers and the state they share |
//! | 12 | [`app`] | binds, starts a node, serves the routes, graceful shutdown |
//! | 13 | [`cli`] | `serve`, `token`, `vapid`, `push dead-letters`, `check-config` |

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod push;
pub mod rate_limit;
pub mod routes;
pub mod sse;
pub mod telemetry;
pub mod wire;
