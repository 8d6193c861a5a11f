//! In-process dispatch benchmarks (no database), printed as a table:
//! - throughput of no-op handlers through the dispatch and completion channels;
//! - parallel speed-up of 200 handlers sleeping 20 ms with max_concurrent_handlers 10,
//!   beside the blocking, one-at-a-time loop the dual-channel design replaced.
//!
//! `cargo bench -p tasker-worker --bench dispatch`

use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::queue::QueueName;
use tasker_worker::{
    execute, DispatchedStep, HandlerDispatchService, HandlerError, HandlerOutput, HandlerRegistry,
    StepContext, StepHandler,
};
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

// The same allocator the `tasker` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Noop;

#[async_trait::async_trait]
impl StepHandler for Noop {
    async fn call(&self, _: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Ok(HandlerOutput::default())
    }
}

struct Sleep(Duration);

#[async_trait::async_trait]
impl StepHandler for Sleep {
    async fn call(&self, _: &StepContext) -> Result<HandlerOutput, HandlerError> {
        tokio::time::sleep(self.0).await;
        Ok(HandlerOutput::default())
    }
}

fn step(callable: &str) -> DispatchedStep {
    DispatchedStep {
        event_id: Uuid::now_v7(),
        context: Arc::new(StepContext {
            task_uuid: Uuid::now_v7(),
            step_uuid: Uuid::now_v7(),
            step_name: "bench".into(),
            namespace: "bench".into(),
            task_name: "bench".into(),
            task_version: "1".into(),
            attempt: 1,
            max_attempts: 1,
            handler_callable: callable.into(),
            initialization: serde_json::json!({}),
            inputs: serde_json::json!({}),
            task_context: serde_json::json!({"order_id": 1}),
            dependency_results: Default::default(),
            timeout_seconds: None,
        }),
        publishes_events: Vec::new(),
        queue: QueueName::new("worker_bench_queue").unwrap(),
        dispatched_at: Instant::now(),
        lease_expires_at: chrono::Utc::now(),
    }
}

/// Pushes `n` steps through both channels; returns the wall time.
async fn run_pipeline(
    registry: HandlerRegistry,
    callable: &str,
    n: usize,
    permits: usize,
) -> Duration {
    let (dtx, drx) = mpsc::channel(1000);
    let (ctx, mut crx) = mpsc::channel(1000);
    let svc = HandlerDispatchService::new(
        drx,
        ctx,
        Arc::new(registry),
        Arc::new(Semaphore::new(permits)),
        Duration::from_secs(30),
        "bench".into(),
    );
    let template = step(callable);
    let start = Instant::now();
    let service = tokio::spawn(svc.run());
    let producer = tokio::spawn(async move {
        for _ in 0..n {
            let mut s = template.clone();
            s.event_id = Uuid::now_v7();
            dtx.send(s).await.unwrap();
        }
    });
    let mut done = 0;
    while done < n {
        crx.recv().await.unwrap();
        done += 1;
    }
    let elapsed = start.elapsed();
    producer.await.unwrap();
    service.await.unwrap();
    elapsed
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut noop = HandlerRegistry::new();
        noop.register("noop", Noop);
        // Warm up allocators and the scheduler.
        run_pipeline(noop.clone(), "noop", 20_000, 10).await;
        let n = 300_000;
        let t = run_pipeline(noop.clone(), "noop", n, 10).await;
        let throughput = n as f64 / t.as_secs_f64();

        let mut sleepy = HandlerRegistry::new();
        sleepy.register("sleep", Sleep(Duration::from_millis(20)));
        let parallel = run_pipeline(sleepy.clone(), "sleep", 200, 10).await;
        let ideal = Duration::from_millis(200 / 10 * 20);
        // The pre-TAS-67 shape: call each handler and wait for it before the next.
        let s = step("sleep");
        let start = Instant::now();
        for _ in 0..200 {
            let r = execute(&sleepy, &s, Duration::from_secs(30), "bench").await;
            assert!(r.success);
        }
        let sequential = start.elapsed();

        println!();
        println!("| benchmark                                   | result            | target            |");
        println!("|---------------------------------------------|-------------------|-------------------|");
        println!("| no-op dispatch throughput ({n} steps)    | {:>10.0} steps/s | >= 300000 steps/s |", throughput);
        println!("| 200 x 20 ms handlers, 10 permits            | {:>10.3} s      | ideal {:.3} s     |", parallel.as_secs_f64(), ideal.as_secs_f64());
        println!("|   ratio to ideal                            | {:>10.3}x        | <= 1.15x          |", parallel.as_secs_f64() / ideal.as_secs_f64());
        println!("| 200 x 20 ms, blocking sequential baseline   | {:>10.3} s      | (about 4 s)       |", sequential.as_secs_f64());
        println!("|   speed-up over sequential                  | {:>10.1}x        |                   |", sequential.as_secs_f64() / parallel.as_secs_f64());
    });
}
