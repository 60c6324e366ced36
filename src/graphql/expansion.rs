//! Refuses a document whose fragment spreads, expanded, would make too many selections, or
//! spread a fragment within itself, before async-graphql looks at it: its depth check and its
//! validation visit every spread anew, so a 1 KB document of fragments that each spread the
//! next one seven times, twelve deep (7^12 selections) held a core for hours.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Positioned, ServerError, ServerResult, Variables};

use super::api_error;
use crate::app::AppError;

/// Selections in a document once every fragment spread is replaced by the fragment, at most:
/// ten times the complexity limit, so only documents refused anyway are refused here.
pub const MAX_EXPANDED_SELECTIONS: usize = 20_000;

/// Nesting (fields, inline fragments and spreads), at most. async-graphql refuses documents
/// nested deeper than 32 anyway; this bounds the measuring itself (a chain of fragments).
const MAX_NESTING: usize = 64;

pub struct BoundedExpansion;

impl ExtensionFactory for BoundedExpansion {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(BoundedExpansionExtension)
    }
}

struct BoundedExpansionExtension;

#[async_trait::async_trait]
impl Extension for BoundedExpansionExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Parsed here to be measured, and again by async-graphql (its parse and its depth check
        // are one step); parsing is linear. A document that does not parse is left to it.
        if let Ok(document) = async_graphql::parser::parse_query(query) {
            if let Err(refusal) = measure(&document) {
                let error = api_error(AppError::BadInput(refusal));
                let mut server = ServerError::new(error.message, None);
                server.extensions = error.extensions;
                return Err(server);
            }
        }
        next.run(ctx, query, variables).await
    }
}

/// Refuses a document too large once expanded, or with a fragment spread within itself.
fn measure(document: &ExecutableDocument) -> Result<(), String> {
    let mut fragments = HashMap::new();
    let mut total = 0usize;
    for (_, operation) in document.operations.iter() {
        total = total.saturating_add(expanded(
            document,
            &operation.node.selection_set,
            &mut fragments,
            0,
        )?);
        if total > MAX_EXPANDED_SELECTIONS {
            return Err(too_large());
        }
    }
    Ok(())
}

fn too_large() -> String {
    format!("the document has more than {MAX_EXPANDED_SELECTIONS} selections once its fragments are expanded")
}

/// The selections of `set` with its fragments expanded; each fragment is measured once
/// (`None` while it is being measured: met again then, it is spread within itself).
fn expanded<'d>(
    document: &'d ExecutableDocument,
    set: &'d Positioned<SelectionSet>,
    fragments: &mut HashMap<&'d str, Option<usize>>,
    nesting: usize,
) -> Result<usize, String> {
    if nesting > MAX_NESTING {
        return Err(format!(
            "the document is nested more than {MAX_NESTING} deep"
        ));
    }
    let mut total = 0usize;
    for selection in &set.node.items {
        let size = match &selection.node {
            Selection::Field(field) => {
                expanded(document, &field.node.selection_set, fragments, nesting + 1)?
            }
            Selection::InlineFragment(inline) => {
                expanded(document, &inline.node.selection_set, fragments, nesting + 1)?
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                match (fragments.get(name), document.fragments.get(name)) {
                    (Some(Some(size)), _) => *size,
                    (Some(None), _) => {
                        return Err(format!("fragment {name} is spread within itself"))
                    }
                    // Unknown: validation says so.
                    (None, None) => 0,
                    (None, Some(fragment)) => {
                        fragments.insert(name, None);
                        let size = expanded(
                            document,
                            &fragment.node.selection_set,
                            fragments,
                            nesting + 1,
                        )?;
                        fragments.insert(name, Some(size));
                        size
                    }
                }
            }
        };
        total = total.saturating_add(1).saturating_add(size);
        if total > MAX_EXPANDED_SELECTIONS {
            return Err(too_large());
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> Result<(), String> {
        measure(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn fragments_are_counted_once_per_spread() {
        assert_eq!(
            check("{ ...A ...A } fragment A on Query { me { id userName } }"),
            Ok(())
        );
        let fan = |levels: usize, fan: usize| {
            let mut query = String::from("{ ...F0 }");
            for level in 0..levels {
                let spreads = format!(" ...F{}", level + 1).repeat(fan);
                query.push_str(&format!(" fragment F{level} on Query {{{spreads} }}"));
            }
            query + &format!(" fragment F{levels} on Query {{ __typename }}")
        };
        // About 12 000 selections: within the bound; 7^12: far beyond, and refused at once.
        assert_eq!(check(&fan(12, 2)), Ok(()));
        assert_eq!(check(&fan(12, 7)), Err(too_large()));
    }

    #[test]
    fn a_fragment_spread_within_itself_is_refused() {
        let refused =
            check("{ me { ...U } } fragment U on User { id ...V } fragment V on User { ...U }");
        assert!(refused.unwrap_err().contains("within itself"));
        // Unused, it is for validation to refuse.
        assert_eq!(check("{ me { id } } fragment L on Query { ...L }"), Ok(()));
        // A chain of fragments deeper than any document async-graphql takes.
        let mut chain = String::from("{ ...C0 }");
        for i in 0..100 {
            chain.push_str(&format!(" fragment C{i} on Query {{ ...C{} }}", i + 1));
        }
        chain.push_str(" fragment C100 on Query { __typename }");
        assert!(check(&chain).unwrap_err().contains("nested"));
    }
}
