use super::ApiError;
use crate::OrchestrationCore;
use axum::extract::State;
use axum::Json;
use tasker_shared::models::TemplateRegistry;

pub async fn list(
    State(core): State<OrchestrationCore>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let templates = TemplateRegistry::new(core.pool.clone()).list().await?;
    let list: Vec<serde_json::Value> = templates
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "namespace": r.template.namespace,
                "name": r.template.name,
                "version": r.template.version,
                "description": r.template.description,
                "steps": r.template.steps.iter().map(|s| serde_json::json!({
                    "name": s.name, "callable": s.handler.callable, "dependencies": s.dependencies,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "templates": list })))
}
