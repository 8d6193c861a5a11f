//! Workers running in this process, found by the database and namespace they serve, so that
//! a task created here can hand its root steps straight to one of them: claimed in the
//! creating transaction (`tasker.create_task`'s `p_claim_worker`), with no queue read and no
//! claim transaction of their own. What the creation does not claim goes through the queue
//! as before, for whichever worker is free.

use crate::claim::ClaimedStep;
use parking_lot::Mutex;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

/// A worker of this process that takes roots claimed for it at creation.
pub trait LocalWorker: Send + Sync {
    /// The id its claims record.
    fn worker_id(&self) -> &str;
    fn lease_seconds(&self) -> i32;
    /// Room for at most `max` steps, as much as a read of its queue could take now, held
    /// (and counted against its limits) until handed over or dropped. None when it has
    /// none, or is stopping.
    fn reserve(&self, max: usize) -> Option<Box<dyn RootReservation>>;
}

/// Room a [`LocalWorker`] holds for roots about to be claimed for it.
pub trait RootReservation: Send {
    /// How many roots the worker holds room for.
    fn room(&self) -> usize;
    /// Gives the worker the roots the creation claimed (never more than `room`), each with
    /// the claim the creator built, knowing all of it (a root has no parent results), and
    /// no queue message (a claimed step has none); the room left over is released.
    fn hand_over(self: Box<Self>, roots: Vec<ClaimedStep>);
}

/// Which database a pool reaches: a worker takes roots only of tasks in its own.
type DatabaseKey = (String, u16, String);

type Registry = Mutex<HashMap<(DatabaseKey, String), Weak<dyn LocalWorker>>>;
static WORKERS: LazyLock<Registry> = LazyLock::new(Default::default);

fn database_key(pool: &PgPool) -> DatabaseKey {
    let o = pool.connect_options();
    (
        o.get_host().to_string(),
        o.get_port(),
        o.get_database().unwrap_or_default().to_string(),
    )
}

/// Lists `worker` as serving `namespace` in `pool`'s database for as long as it lives (the
/// registry holds it weakly); a later registration for the same namespace replaces it.
pub fn register(pool: &PgPool, namespace: &str, worker: Weak<dyn LocalWorker>) {
    WORKERS
        .lock()
        .insert((database_key(pool), namespace.to_string()), worker);
}

/// The live worker of this process serving `namespace` in `pool`'s database, if any.
pub fn find(pool: &PgPool, namespace: &str) -> Option<Arc<dyn LocalWorker>> {
    let key = (database_key(pool), namespace.to_string());
    let mut workers = WORKERS.lock();
    let found = workers.get(&key)?.upgrade();
    if found.is_none() {
        workers.remove(&key);
    }
    found
}
