//! Herald's integration tests: one binary, real `redis-server` processes on
//! free loopback ports, the real HTTP server on port 0.

mod helpers;

mod api_docs;
mod auth;
mod backpressure;
mod bad_input;
mod center;
mod cli_publish;
mod client_library;
mod conformance;
mod cookie_auth;
mod cors;
mod demo;
mod engine_model;
mod faults;
mod fuzz_regressions;
mod history;
mod isolation;
mod jwt_keys;
mod layers;
mod library;
mod nodes;
mod operations;
mod properties;
mod push;
mod push_operations;
mod push_service_checks;
mod push_subscriptions;
mod resume;
mod slow_requests;
mod streams;
mod subscriptions;
mod topics;
mod unread_stress;
mod user_limits;
mod validation;
mod wire;

/// Generates one test per engine for each listed `async fn name(engine)`.
/// The Redis variant starts its own `redis-server` and stops it afterwards.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Engine::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::helpers::RedisServer::start();
                    super::$name($crate::helpers::Engine::Redis(server.url())).await
                }
            )*
        }
    };
}
