//! Process-wide Prometheus metrics. The `metrics` macros record into one global recorder;
//! `/metrics` endpoints render it.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use (later calls return the same handle).
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's); metrics
        // then go there and this handle renders nothing, which is the embedder's choice.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    prometheus().render()
}
