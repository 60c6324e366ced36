//! The API as the fuzzer sees it: `schema.graphql` at the repository root, parsed with
//! async-graphql's own SDL parser into root fields, object types, input objects and enums.

use std::collections::BTreeMap;

use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};

/// An argument or an input object's field.
#[derive(Debug, Clone)]
pub struct InputValue {
    pub name: String,
    pub ty: Type,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub args: Vec<InputValue>,
    pub ty: Type,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Scalar,
    Object(Vec<Field>),
    Enum(Vec<String>),
    Input(Vec<InputValue>),
}

pub struct Schema {
    pub types: BTreeMap<String, Kind>,
    /// The root types' names: query, mutation, subscription.
    pub roots: [String; 3],
}

impl Schema {
    pub fn load() -> Schema {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        let sdl = std::fs::read_to_string(path).expect("schema.graphql at the repository root");
        let document = async_graphql::parser::parse_schema(&sdl).expect("schema.graphql parses");
        let mut types = BTreeMap::new();
        let mut roots = ["Query".to_owned(), "Mutation".into(), "Subscription".into()];
        for name in ["Int", "Float", "String", "Boolean", "ID"] {
            types.insert(name.to_owned(), Kind::Scalar);
        }
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    for (slot, root) in [schema.query, schema.mutation, schema.subscription]
                        .into_iter()
                        .enumerate()
                    {
                        if let Some(root) = root {
                            roots[slot] = root.node.to_string();
                        }
                    }
                }
                TypeSystemDefinition::Type(definition) => {
                    let definition = definition.node;
                    let input = |values: Vec<
                        async_graphql::Positioned<
                            async_graphql::parser::types::InputValueDefinition,
                        >,
                    >| {
                        values
                            .into_iter()
                            .map(|v| InputValue {
                                name: v.node.name.node.to_string(),
                                ty: v.node.ty.node,
                            })
                            .collect::<Vec<_>>()
                    };
                    let kind = match definition.kind {
                        TypeKind::Scalar => Kind::Scalar,
                        TypeKind::Object(object) => Kind::Object(
                            object
                                .fields
                                .into_iter()
                                .map(|f| Field {
                                    name: f.node.name.node.to_string(),
                                    args: input(f.node.arguments),
                                    ty: f.node.ty.node,
                                })
                                .collect(),
                        ),
                        TypeKind::Enum(e) => Kind::Enum(
                            e.values
                                .into_iter()
                                .map(|v| v.node.value.node.to_string())
                                .collect(),
                        ),
                        TypeKind::InputObject(i) => Kind::Input(input(i.fields)),
                        TypeKind::Interface(_) | TypeKind::Union(_) => continue,
                    };
                    types.insert(definition.name.node.to_string(), kind);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        let schema = Schema { types, roots };
        for root in &schema.roots {
            assert!(
                !schema.fields(root).is_empty(),
                "root type {root} has fields in schema.graphql"
            );
        }
        schema
    }

    /// The fields of an object type (none for any other type).
    pub fn fields(&self, type_name: &str) -> &[Field] {
        match self.types.get(type_name) {
            Some(Kind::Object(fields)) => fields,
            _ => &[],
        }
    }

    pub fn object_names(&self) -> Vec<&str> {
        self.types
            .iter()
            .filter(|(_, kind)| matches!(kind, Kind::Object(_)))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    pub fn type_names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }
}

/// The named type at the bottom of a (list, non-null) type.
pub fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => named(inner),
    }
}
