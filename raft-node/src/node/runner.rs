//! The async loop that runs a node in a server: ticks from an injected [`Ticker`], inbound
//! traffic and requests from channels. Tests that need determinism skip it and call
//! `tick`/`poll` themselves.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{NodeError, RaftNode};
use crate::machine::StateMachine;
use crate::node::Transport;

/// The source of logical clock ticks.
pub trait Ticker: Send {
    /// Resolves at the next tick.
    fn tick(&mut self) -> impl Future<Output = ()> + Send;
}

/// Ticks every `period` of real time (etcd: 100 ms).
pub struct IntervalTicker(tokio::time::Interval);

impl IntervalTicker {
    /// A ticker with this period; late ticks are delayed, not bunched.
    pub fn new(period: Duration) -> Self {
        let mut i = tokio::time::interval(period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        IntervalTicker(i)
    }
}

impl Ticker for IntervalTicker {
    async fn tick(&mut self) {
        self.0.tick().await;
    }
}

/// Ticks when told to through the paired sender (tests); never ticks once it is dropped.
pub struct ManualTicker(mpsc::UnboundedReceiver<()>);

impl ManualTicker {
    /// A ticker and the sender that makes it tick.
    pub fn new() -> (mpsc::UnboundedSender<()>, ManualTicker) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, ManualTicker(rx))
    }
}

impl Ticker for ManualTicker {
    async fn tick(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

impl<M: StateMachine, T: Transport> RaftNode<M, T> {
    /// Runs the node until [`super::NodeHandle::stop`] or a fatal error: each tick, inbound
    /// message and request is processed, then every `Ready` it produced.
    pub async fn run(mut self, mut ticker: impl Ticker) -> Result<Self, NodeError> {
        // the node holds a sender of both channels, so neither closes while it runs
        loop {
            self.poll()?;
            if self.stopped {
                return Ok(self);
            }
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                Some(input) = self.peer_rx.recv() => self.on_peer(input),
                Some(cmd) = self.cmd_rx.recv() => self.on_command(cmd),
            }
        }
    }
}
