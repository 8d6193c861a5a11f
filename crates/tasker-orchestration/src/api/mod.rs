//! The REST API (axum): tasks, steps, templates, health and metrics.
