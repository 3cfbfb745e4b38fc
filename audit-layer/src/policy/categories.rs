//! Product categories: named groups of `resource.product` values, as the original's v2 API
//! serves them (`GET …/logs/audit/product_categories`) and filters by them
//! (`product_category=`).
//!
//! A category is declared where the products are: on the operations of the API description
//! (`x-audit-product-category`, on an operation or on its path item) or with
//! [`Operation::product_category`](super::Operation::product_category). The compiled policy
//! collects them ([`AuditPolicy::product_categories`](super::AuditPolicy::product_categories)):
//! each category holds the products of the operations that name it.

/// The most bytes a category's name may take.
const MAX_CATEGORY_LEN: usize = 64;

/// One product category: its name and the products it groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductCategory {
    value: String,
    products: Vec<String>,
}

impl ProductCategory {
    /// The category's name, as first declared (matched without regard to case).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The `resource.product` values it groups, in the order first declared.
    pub fn products(&self) -> &[String] {
        &self.products
    }
}

/// The product categories of an API. Names are compared without regard to case: `DNS` and
/// `dns` are one category.
///
/// ```
/// use audit_layer::ProductCategories;
///
/// let categories = ProductCategories::new()
///     .category("DNS", ["dns", "zones"])?
///     .category("Notifications", ["alerting"])?
///     .category("dns", ["dns_firewall"])?;
/// let dns = categories.get("dns").unwrap();
/// assert_eq!(dns.value(), "DNS");
/// assert_eq!(dns.products(), ["dns", "zones", "dns_firewall"]);
/// assert_eq!(categories.len(), 2);
/// assert!(categories.get("security").is_none());
/// # Ok::<(), audit_layer::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductCategories {
    categories: Vec<ProductCategory>,
}

impl ProductCategories {
    /// No categories.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `products` to the category `value` (created when new).
    ///
    /// # Errors
    ///
    /// [`PolicyError::ProductCategory`](super::PolicyError::ProductCategory) when `value` is
    /// not 1 to 64 letters, digits, spaces, `_`, `-`, `.` or `&`, or a product is empty.
    pub fn category<P: Into<String>>(
        mut self,
        value: &str,
        products: impl IntoIterator<Item = P>,
    ) -> Result<Self, super::PolicyError> {
        check_name(value)?;
        let index = match self.position(value) {
            Some(index) => index,
            None => {
                self.categories.push(ProductCategory {
                    value: value.to_owned(),
                    products: Vec::new(),
                });
                self.categories.len() - 1
            }
        };
        let category = &mut self.categories[index];
        for product in products {
            let product = product.into();
            if product.is_empty() {
                return Err(super::PolicyError::ProductCategory {
                    category: value.to_owned(),
                    why: "a product of it is empty".into(),
                });
            }
            if !category.products.contains(&product) {
                category.products.push(product);
            }
        }
        Ok(self)
    }

    /// The category named `value`, whatever its case.
    pub fn get(&self, value: &str) -> Option<&ProductCategory> {
        self.position(value).map(|i| &self.categories[i])
    }

    /// Every category, in the order first declared.
    pub fn iter(&self) -> impl Iterator<Item = &ProductCategory> {
        self.categories.iter()
    }

    /// How many categories there are.
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    fn position(&self, value: &str) -> Option<usize> {
        let wanted = value.to_lowercase();
        self.categories
            .iter()
            .position(|c| c.value.to_lowercase() == wanted)
    }
}

/// A category name: 1 to 64 bytes of letters, digits, spaces, `_`, `-`, `.` and `&`.
fn check_name(value: &str) -> Result<(), super::PolicyError> {
    let fits = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '&');
    if value.is_empty() || value.len() > MAX_CATEGORY_LEN || !value.chars().all(fits) {
        let shown: String = crate::escape::visible(value.as_bytes())
            .chars()
            .take(MAX_CATEGORY_LEN + 1)
            .collect();
        return Err(super::PolicyError::ProductCategory {
            category: shown,
            why: format!(
                "a product category is 1 to {MAX_CATEGORY_LEN} bytes of letters, digits, spaces, '_', '-', '.' and '&'"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        for bad in ["", "dns\u{1b}[2J", &"x".repeat(65), "a/b"] {
            let err = ProductCategories::new()
                .category(bad, ["p"])
                .unwrap_err()
                .to_string();
            assert!(err.contains("1 to 64 bytes"), "{bad:?}: {err}");
            assert!(!err.contains('\u{1b}'), "escaped: {err}");
        }
        let err = ProductCategories::new().category("DNS", [""]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn names_match_without_regard_to_case_and_products_are_not_repeated() {
        let categories = ProductCategories::new()
            .category("Zero Trust", ["access"])
            .unwrap()
            .category("ZERO TRUST", ["access", "gateway"])
            .unwrap();
        assert_eq!(categories.len(), 1);
        let category = categories.get("zero trust").unwrap();
        assert_eq!(category.products(), ["access", "gateway"]);
        assert_eq!(category.value(), "Zero Trust");
    }
}
