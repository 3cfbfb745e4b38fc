//! `GET /accounts/{account_id}/logs/audit/product_categories`: the product categories the
//! `product_category` filter takes, each with the `resource_product` values it stands for, in
//! the v2 API's shape (`[{"value", "label", "products": [{"value", "label"}]}]`). Labels are
//! the names themselves: an API description declares names only.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Shared, authorize, error, json_response};
use crate::store::ChainedStore;

pub(super) async fn list<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    Path(account_id): Path<String>,
    RawQuery(raw): RawQuery,
    parts: Parts,
) -> Response {
    if let Some(denied) = authorize(&shared, &parts, &account_id).await {
        return denied;
    }
    if let Some((key, _)) = form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()).next() {
        let key: String = audit_layer::escape::visible(key.as_bytes())
            .chars()
            .take(64)
            .collect();
        return error(
            StatusCode::BAD_REQUEST,
            400,
            &format!("unknown parameter {key:?}: product categories take no parameters"),
        );
    }
    let result: Vec<Value> = shared
        .categories
        .iter()
        .map(|category| {
            let products: Vec<Value> = category
                .products()
                .iter()
                .map(|p| json!({"value": p, "label": p}))
                .collect();
            json!({"value": category.value(), "label": category.value(), "products": products})
        })
        .collect();
    let count = result.len();
    json_response(
        json!({"success": true, "errors": [], "messages": [], "result": result,
               "result_info": {"count": count}})
        .to_string(),
    )
}
