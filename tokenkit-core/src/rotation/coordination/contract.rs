//! The contract every [`Coordinator`] keeps, as tests written once and run against each
//! implementation: the in-process one here, the Redis one in `tokenkit-redis`.
//!
//! A [`Harness`] gives two views of one coordination (two replicas, or two clients of a
//! process) and a way to let time pass on the coordinator's clock. [`run_all`] runs every
//! check; each panics with a message naming the broken promise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed check

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::{Coordinator, Role};
use crate::rotation::SessionKey;
use crate::runtime::BoxFuture;
use crate::token::{AccessToken, RefreshToken, TokenRecord};

/// What the contract tests need from an implementation.
pub trait Harness: Sync {
    /// The coordinator under test, as one replica sees it.
    fn one(&self) -> &dyn Coordinator;
    /// The same coordination as another replica sees it (may be the same value).
    fn other(&self) -> &dyn Coordinator;
    /// Lets `duration` pass on the coordinator's clock.
    fn pass(&self, duration: Duration) -> BoxFuture<'_, ()>;
    /// A session key no other check of this run uses (a distributed coordinator's harness can
    /// add a namespace).
    fn key(&self, name: &str) -> SessionKey {
        SessionKey::refresh_token(RefreshToken::new(format!("contract-{name}")))
    }
}

const TTL: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(5);

fn record(name: &str) -> Arc<TokenRecord> {
    Arc::new(
        TokenRecord::new(AccessToken::new(format!("a-{name}")), UNIX_EPOCH)
            .with_refresh_token(RefreshToken::new(format!("r-{name}"))),
    )
}

fn lead(role: Role, what: &str) -> super::Lease {
    match role {
        Role::Lead(lease) => lease,
        Role::Follow => panic!("{what}: expected to lead, was told to follow"),
    }
}

fn follows(role: &Role) -> bool {
    matches!(role, Role::Follow)
}

/// Runs every check of the contract.
pub async fn run_all(h: &impl Harness) {
    one_leader_per_key(h).await;
    only_the_owner_releases_or_extends(h).await;
    a_lapsed_lease_can_be_taken_over(h).await;
    successors_last_for_the_window(h).await;
    followers_wake_on_publish_and_on_release(h).await;
    waiting_is_bounded(h).await;
}

/// One leader per key at a time, across replicas; different keys are independent.
pub async fn one_leader_per_key(h: &impl Harness) {
    let (k, other_key) = (h.key("one-leader"), h.key("one-leader-other"));
    let first = lead(h.one().acquire(&k, TTL).await.unwrap(), "first acquire");
    assert!(
        follows(&h.other().acquire(&k, TTL).await.unwrap()),
        "a second leader was granted"
    );
    assert!(
        follows(&h.one().acquire(&k, TTL).await.unwrap()),
        "the same replica led twice"
    );
    let independent = lead(h.other().acquire(&other_key, TTL).await.unwrap(), "another key");
    h.one().release(&first).await.unwrap();
    let next = lead(h.other().acquire(&k, TTL).await.unwrap(), "acquire after release");
    h.other().release(&next).await.unwrap();
    h.other().release(&independent).await.unwrap();
}

/// A lease that lapsed and was granted to another leader cannot be released or extended by
/// its former owner.
pub async fn only_the_owner_releases_or_extends(h: &impl Harness) {
    let k = h.key("owner-only");
    let short = Duration::from_secs(2);
    let stale = lead(h.one().acquire(&k, short).await.unwrap(), "first lease");
    assert!(
        h.one().extend(&stale, short).await.unwrap(),
        "the owner extends a live lease"
    );
    h.pass(Duration::from_secs(3)).await;
    let current = lead(h.other().acquire(&k, TTL).await.unwrap(), "takeover after lapse");
    assert!(
        !h.one().extend(&stale, TTL).await.unwrap(),
        "a former owner extended"
    );
    h.one().release(&stale).await.unwrap();
    assert!(
        follows(&h.one().acquire(&k, TTL).await.unwrap()),
        "a former owner's release freed the new leader's lease"
    );
    assert!(h.other().extend(&current, TTL).await.unwrap());
    h.other().release(&current).await.unwrap();
}

/// A leader that disappears without releasing blocks the key only until its lease lapses.
pub async fn a_lapsed_lease_can_be_taken_over(h: &impl Harness) {
    let k = h.key("lapse");
    let _abandoned = lead(
        h.one().acquire(&k, Duration::from_secs(1)).await.unwrap(),
        "lease",
    );
    assert!(follows(&h.other().acquire(&k, TTL).await.unwrap()));
    h.pass(Duration::from_secs(2)).await;
    let next = lead(h.other().acquire(&k, TTL).await.unwrap(), "takeover");
    h.other().release(&next).await.unwrap();
}

/// A published successor is visible to every replica for the window, then gone; other keys
/// never see it.
pub async fn successors_last_for_the_window(h: &impl Harness) {
    let (k, other_key) = (h.key("window"), h.key("window-other"));
    let rec = record("window");
    assert!(h.one().successor(&k).await.unwrap().is_none());
    h.one().publish(&k, Arc::clone(&rec), WINDOW).await.unwrap();
    for view in [h.one(), h.other()] {
        let got = view
            .successor(&k)
            .await
            .unwrap()
            .expect("successor within the window");
        assert!(got.same_tokens(&rec), "a different record came back");
    }
    assert!(
        h.other().successor(&other_key).await.unwrap().is_none(),
        "served to another key"
    );
    h.pass(WINDOW + Duration::from_secs(1)).await;
    assert!(
        h.one().successor(&k).await.unwrap().is_none(),
        "served after the window"
    );
    assert!(
        h.other().successor(&k).await.unwrap().is_none(),
        "served after the window"
    );
}

/// A follower waiting for the leader gets the published successor; without a successor, the
/// release ends its wait; with no leader at all, it does not wait.
pub async fn followers_wake_on_publish_and_on_release(h: &impl Harness) {
    let k = h.key("wake");
    let rec = record("wake");
    assert!(
        h.other().wait(&k, TTL).await.unwrap().is_none(),
        "waited without a leader"
    );
    let lease = lead(h.one().acquire(&k, TTL).await.unwrap(), "lease");
    let (waited, ()) = join(h.other().wait(&k, TTL), async {
        h.one().publish(&k, Arc::clone(&rec), WINDOW).await.unwrap();
        h.one().release(&lease).await.unwrap();
    })
    .await;
    let got = waited.unwrap().expect("the follower saw the successor");
    assert!(got.same_tokens(&rec));

    let k = h.key("wake-release");
    let lease = lead(h.one().acquire(&k, TTL).await.unwrap(), "lease");
    let (waited, ()) = join(h.other().wait(&k, TTL), async {
        h.one().release(&lease).await.unwrap();
    })
    .await;
    assert!(
        waited.unwrap().is_none(),
        "a release without a successor gives none"
    );
}

/// A follower's wait ends when its bound does, even if the leader never finishes.
pub async fn waiting_is_bounded(h: &impl Harness) {
    let k = h.key("bounded");
    let lease = lead(h.one().acquire(&k, TTL).await.unwrap(), "lease");
    let (waited, ()) = join(
        h.other().wait(&k, Duration::from_millis(200)),
        h.pass(Duration::from_millis(300)),
    )
    .await;
    assert!(waited.unwrap().is_none());
    h.one().release(&lease).await.unwrap();
}

/// Polls both futures to completion on the caller's executor.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    futures_util::future::join(a, b).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::InProcessCoordinator;
    use crate::runtime::{ManualClock, Runtime};

    struct InProcess {
        clock: ManualClock,
        coordinator: InProcessCoordinator,
        /// A second handle on the same coordination, as a second client holds it.
        clone: InProcessCoordinator,
    }

    impl Harness for InProcess {
        fn one(&self) -> &dyn Coordinator {
            &self.coordinator
        }
        fn other(&self) -> &dyn Coordinator {
            &self.clone
        }
        fn pass(&self, duration: Duration) -> BoxFuture<'_, ()> {
            let clock = self.clock.clone();
            Box::pin(async move { clock.advance(duration) })
        }
    }

    #[test]
    fn the_in_process_coordinator_keeps_the_contract() {
        let clock = ManualClock::default();
        let coordinator = InProcessCoordinator::new(
            Runtime::new()
                .with_clock(clock.clone())
                .with_sleep(clock.sleeper()),
        );
        let harness = InProcess {
            clone: coordinator.clone(),
            coordinator,
            clock,
        };
        futures_executor::block_on(run_all(&harness));
        // Once the windows and leases are over, nothing is left.
        harness.clock.advance(Duration::from_secs(60));
        assert_eq!(
            harness.coordinator.sessions(),
            0,
            "state left after every window and lease"
        );
    }
}
