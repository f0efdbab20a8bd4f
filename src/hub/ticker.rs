//! The hub's node-wide tick: one timer for all streams, not one per stream.

use std::{sync::Arc, time::Duration};

use super::{Hub, NodeTask, TICK};

/// Every [`TICK`]: ends streams whose token expired, warns those about to
/// (`token_expiring`, `warn_before` ahead), and owes quiet ones a keep-alive
/// (see [`Hub::tick`]). Ends when the hub is gone. The hub's stall watch
/// starts as the task is made, not when the hub was.
pub fn ticker(hub: &Arc<Hub>, warn_before: Duration) -> NodeTask {
    hub.watch_ticks_from_now();
    let hub = Arc::downgrade(hub);
    Box::pin(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            hub.tick(crate::clock::now_unix(), warn_before);
        }
    })
}
