//! CreationClaims: this worker as the [`LocalWorker`] of its namespaces, taking the roots a
//! task created in this process claims for it (see `tasker_shared::local_worker`). As many
//! as a read of its queue could take: within `max_steps_in_flight`, and free slots on the
//! dispatch channel, reserved before the creation so that handing them over never waits.
//! (A recording's claims of children stop at the handlers free, to keep a chain from
//! holding back other work; a creation's roots are new work, as a read's messages are.)

use super::actors::step_executor_actor::dispatched;
use super::handlers::completion_processor::ChildClaims;
use super::in_flight::InFlight;
use super::worker_metrics as m;
use crate::step::DispatchedStep;
use std::sync::Arc;
use tasker_shared::claim::ClaimedStep;
use tasker_shared::local_worker::{LocalWorker, RootReservation};
use tasker_shared::queue::worker_queue;
use tokio::sync::mpsc::OwnedPermit;

pub struct CreationClaims {
    pub worker_id: String,
    pub in_flight: Arc<InFlight>,
    /// The settings a recording claims children with (dispatch channel, held weakly so
    /// that a creator holding this worker does not keep it open at shutdown; limits,
    /// lease, stop); `handlers` does not apply here.
    pub claims: ChildClaims,
}

impl LocalWorker for CreationClaims {
    fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn lease_seconds(&self) -> i32 {
        self.claims.lease_seconds
    }

    fn reserve(&self, max: usize) -> Option<Box<dyn RootReservation>> {
        if self.claims.stop.is_cancelled() {
            return None;
        }
        let tx = self.claims.dispatch.upgrade()?;
        let room = self
            .claims
            .max_in_flight
            .saturating_sub(self.in_flight.unexecuted())
            .min(tx.capacity())
            .min(max);
        let mut permits = Vec::with_capacity(room);
        while permits.len() < room {
            match tx.clone().try_reserve_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if permits.is_empty() {
            return None;
        }
        // Counted against max_steps_in_flight until they are entries of their own.
        self.in_flight.reserve(permits.len());
        Some(Box::new(Reserved {
            reserved: permits.len(),
            permits,
            in_flight: self.in_flight.clone(),
        }))
    }
}

struct Reserved {
    permits: Vec<OwnedPermit<DispatchedStep>>,
    reserved: usize,
    in_flight: Arc<InFlight>,
}

impl RootReservation for Reserved {
    fn room(&self) -> usize {
        self.permits.len()
    }

    fn hand_over(mut self: Box<Self>, roots: Vec<ClaimedStep>) {
        for root in roots {
            let step = root.step_uuid;
            let (Some(permit), Ok(queue)) = (self.permits.pop(), worker_queue(&root.namespace))
            else {
                tracing::error!(step = %step, "root claimed at creation without room or queue; its lease will expire and it will run again");
                continue;
            };
            permit.send(dispatched(root, &queue, &self.in_flight));
            metrics::counter!(m::ROOTS_CLAIMED_AT_CREATION).increment(1);
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.in_flight.unreserve(self.reserved);
    }
}
