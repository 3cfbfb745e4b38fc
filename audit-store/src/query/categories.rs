//! `GET /accounts/{account_id}/logs/audit/product_categories`: the product categories the
//! `product_category` filter takes, each with the `resource_product` values it stands for, in
//! the v2 API's shape (`[{"value", "label", "products": [{"value", "label"}]}]`). Labels are
//! the names themselves: an API description declares names only.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::authorized::{Authorized, NoParams};
use super::{Shared, json_response};
use crate::store::ChainedStore;

pub(super) async fn list<S: ChainedStore>(
    State(shared): State<Arc<Shared<S>>>,
    _: Authorized<NoParams>,
) -> Response {
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
