//! placeholder replaced below
use super::ApiState;
use axum::Router;
pub fn routes() -> Router<ApiState> {
    Router::new()
}
