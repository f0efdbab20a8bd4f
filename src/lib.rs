//! Herald: a real-time notification gateway.
//!
//! Data flows one way:
//!
//! ```text
//! publish (HTTP or FCALL herald_publish)
//!   → engine      one atomic step: store in the inbox, count, publish   engine/
//!   → pub/sub     each node gets only its own users' channels          engine/redis/pubsub.rs
//!   → hub         user → open streams on this node; encode once         hub.rs
//!   → connection  a short bounded queue per stream                     stream/connection.rs
//!   → SSE bytes   replay after the cursor, then live, no gap/duplicate  stream/body.rs
//! ```
//!
//! Nothing flows back up except the hub telling the engine which users'
//! channels to subscribe to.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | layered settings, validated with messages naming the key |
//! | [`telemetry`] | log subscriber |
//! | [`app`] | binds, wires state and routes, graceful shutdown |
//! | [`error`] | every client-visible error and its HTTP status |
//! | [`auth`] | JWT verification, `User` / `Publisher` extractors |
//! | [`domain`] | `UserId`, `EntryId` (the cursor), notifications |
//! | [`engine`] | the `Engine` trait; `memory` and `redis` |
//! | [`hub`] | this node's registry of streams |
//! | [`stream`] | SSE frames, per-stream queue, the response body |
//! | [`limits`] | the per-publisher publish rate and the per-user request rate |
//! | [`metrics`] | Prometheus metrics |
//! | [`clock`] | wall-clock reads; the last-seen marks behind `/healthz` and `/readyz` |
//! | [`routes`] | HTTP handlers |
//! | [`cli`] | `serve`, `token`, `check-config` |

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod stream;
pub mod telemetry;
