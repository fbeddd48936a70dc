//! The static cost estimate kube-apiserver makes of a CRD's CEL rules when the CRD is created or
//! updated, computed the way the API server computes it, so a schema that a real cluster refuses
//! fails here first.
//!
//! The API server (apiextensions-apiserver, cel-go's checker cost estimator):
//! - sizes every value from the schema: a string may hold `maxLength × 4` bytes (maxLength counts
//!   code points, a code point takes up to 4 bytes), a list `maxItems` elements, a map
//!   `maxProperties` entries; without a bound, as many as fit in a 3 MiB request;
//! - estimates each rule's worst-case cost (`matches`: ⌈0.1·(len(string)+1)⌉ × ⌈0.25·len(regex)⌉; a
//!   comprehension: elements × (loop condition + step); identifiers and field selections 1; ...);
//! - multiplies it by the worst-case number of times the rule runs: the product of the bounds of
//!   every list and map enclosing the node the rule sits on;
//! - refuses the CRD when one rule exceeds 10⁷ or the sum of all exceeds 10⁸, with messages this
//!   module reproduces word for word (see the regression fixture of a schema a v1.36 API server
//!   refused).

use std::collections::BTreeMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

/// `StaticEstimatedCostLimit`: the budget of one rule, times its cardinality.
pub const PER_RULE_LIMIT: u64 = 10_000_000;
/// `StaticEstimatedCRDCostLimit`: the budget of all rules of one schema.
pub const SCHEMA_LIMIT: u64 = 100_000_000;
/// The API server's default maximum request size, which bounds what the schema leaves open.
const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;

/// What a schema node can hold, as far as cost is concerned.
#[derive(Clone, Debug)]
enum Ty {
    Str { max: u64 },
    List { max: u64, elem: Box<Ty> },
    Map { max: u64, value: Box<Ty> },
    Object { fields: BTreeMap<String, Ty> },
    Scalar,
    Unknown,
}

impl Ty {
    fn of(schema: &Value) -> Ty {
        let bound = |key: &str| schema.get(key).and_then(Value::as_u64);
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return Ty::Str {
                max: MAX_REQUEST_SIZE_BYTES - 2,
            };
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => {
                let max = if let Some(max_length) = bound("maxLength") {
                    max_length.saturating_mul(4)
                } else if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|v| v.len() as u64)
                        .max()
                        .unwrap_or(0)
                } else {
                    MAX_REQUEST_SIZE_BYTES - 2
                };
                Ty::Str { max }
            }
            Some("array") => {
                let elem = schema.get("items").map_or(Ty::Unknown, Ty::of);
                let max = bound("maxItems").unwrap_or_else(|| {
                    (MAX_REQUEST_SIZE_BYTES - 2) / (min_serialized_size(&elem) + 1)
                });
                Ty::List {
                    max,
                    elem: Box::new(elem),
                }
            }
            Some("object") => match schema.get("additionalProperties") {
                Some(value) if value.is_object() => {
                    let value = Ty::of(value);
                    let max = bound("maxProperties").unwrap_or_else(|| {
                        // "key":value, per entry.
                        (MAX_REQUEST_SIZE_BYTES - 2) / (2 + min_serialized_size(&value) + 2)
                    });
                    Ty::Map {
                        max,
                        value: Box::new(value),
                    }
                }
                _ => Ty::Object {
                    fields: schema
                        .get("properties")
                        .and_then(Value::as_object)
                        .map(|props| props.iter().map(|(k, v)| (k.clone(), Ty::of(v))).collect())
                        .unwrap_or_default(),
                },
            },
            Some("integer" | "number" | "boolean") => Ty::Scalar,
            _ => Ty::Unknown,
        }
    }

    /// How many bytes (strings) or elements (lists, maps) a value may have.
    fn size(&self) -> u64 {
        match self {
            Ty::Str { max } | Ty::List { max, .. } | Ty::Map { max, .. } => *max,
            Ty::Object { .. } | Ty::Scalar => 0,
            Ty::Unknown => u64::MAX,
        }
    }
}

/// The smallest JSON text of a value of this type (`""`, `0`, `{}`, `[]`).
fn min_serialized_size(ty: &Ty) -> u64 {
    match ty {
        Ty::Scalar => 1,
        _ => 2,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    min: u64,
    max: u64,
}

impl Cost {
    const fn fixed(cost: u64) -> Self {
        Self {
            min: cost,
            max: cost,
        }
    }
    fn add(self, other: Cost) -> Cost {
        Cost {
            min: self.min.saturating_add(other.min),
            max: self.max.saturating_add(other.max),
        }
    }
    fn times(self, factor: u64) -> Cost {
        Cost {
            min: self.min.saturating_mul(factor),
            max: self.max.saturating_mul(factor),
        }
    }
}

fn scaled(size: u64, factor: f64) -> u64 {
    if size == u64::MAX {
        return u64::MAX;
    }
    (size as f64 * factor).ceil() as u64
}

/// What the estimator knows of an expression: its cost, its size and (where it came from the
/// schema) its type.
struct Estimate {
    cost: Cost,
    size: u64,
    ty: Ty,
}

impl Estimate {
    fn of_cost(cost: Cost) -> Self {
        Self {
            cost,
            size: u64::MAX,
            ty: Ty::Unknown,
        }
    }
}

struct Estimator {
    scope: Vec<(String, Ty)>,
}

impl Estimator {
    fn expr(&mut self, e: &IdedExpr) -> Result<Estimate, String> {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => {
                let size = s.inner().chars().count() as u64;
                Ok(Estimate {
                    cost: Cost::default(),
                    size,
                    ty: Ty::Str { max: size },
                })
            }
            Expr::Literal(LiteralValue::Bytes(b)) => Ok(Estimate {
                cost: Cost::default(),
                size: b.inner().len() as u64,
                ty: Ty::Unknown,
            }),
            Expr::Literal(_) => Ok(Estimate {
                cost: Cost::default(),
                size: 0,
                ty: Ty::Scalar,
            }),
            Expr::Ident(name) => {
                let ty = self
                    .scope
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, ty)| ty.clone())
                    .ok_or_else(|| format!("unknown identifier {name}"))?;
                Ok(Estimate {
                    cost: Cost::fixed(1),
                    size: ty.size(),
                    ty,
                })
            }
            Expr::Select(select) => {
                let operand = self.expr(&select.operand)?;
                if select.test {
                    // has(): a presence test.
                    return Ok(Estimate {
                        cost: operand.cost.add(Cost::fixed(1)),
                        size: 0,
                        ty: Ty::Scalar,
                    });
                }
                let (ty, select_cost) = match &operand.ty {
                    Ty::Object { fields } => {
                        (fields.get(&select.field).cloned().unwrap_or(Ty::Unknown), 1)
                    }
                    Ty::Map { value, .. } => ((**value).clone(), 1),
                    _ => (Ty::Unknown, 1),
                };
                Ok(Estimate {
                    cost: operand.cost.add(Cost::fixed(select_cost)),
                    size: ty.size(),
                    ty,
                })
            }
            Expr::List(list) => {
                let mut cost = Cost::fixed(LIST_CREATE_BASE_COST);
                for element in &list.elements {
                    cost = cost.add(self.expr(element)?.cost);
                }
                Ok(Estimate {
                    cost,
                    size: list.elements.len() as u64,
                    ty: Ty::Unknown,
                })
            }
            Expr::Map(map) => {
                let mut cost = Cost::fixed(MAP_CREATE_BASE_COST);
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        cost = cost.add(self.expr(&entry.key)?.cost);
                        cost = cost.add(self.expr(&entry.value)?.cost);
                    }
                }
                Ok(Estimate {
                    cost,
                    size: map.entries.len() as u64,
                    ty: Ty::Unknown,
                })
            }
            Expr::Comprehension(comprehension) => {
                let range = self.expr(&comprehension.iter_range)?;
                let init = self.expr(&comprehension.accu_init)?;
                let iter_ty = match &range.ty {
                    Ty::List { elem, .. } => (**elem).clone(),
                    Ty::Map { .. } => Ty::Str {
                        max: MAX_REQUEST_SIZE_BYTES - 2,
                    },
                    _ => Ty::Unknown,
                };
                self.scope.push((comprehension.iter_var.clone(), iter_ty));
                self.scope
                    .push((comprehension.accu_var.clone(), Ty::Unknown));
                let condition = self.expr(&comprehension.loop_cond)?;
                let step = self.expr(&comprehension.loop_step)?;
                self.scope.pop();
                self.scope.pop();
                self.scope
                    .push((comprehension.accu_var.clone(), Ty::Unknown));
                let result = self.expr(&comprehension.result)?;
                self.scope.pop();
                let per_element = condition.cost.add(step.cost);
                Ok(Estimate::of_cost(
                    range
                        .cost
                        .add(init.cost)
                        .add(result.cost)
                        .add(per_element.times(range.size)),
                ))
            }
            Expr::Call(call) => self.call(&call.func_name, call.target.as_deref(), &call.args),
            other => Err(format!("the estimator does not handle {other:?}")),
        }
    }

    fn call(
        &mut self,
        function: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> Result<Estimate, String> {
        let target = target.map(|t| self.expr(t)).transpose()?;
        let args = args
            .iter()
            .map(|a| self.expr(a))
            .collect::<Result<Vec<_>, _>>()?;
        let arg_cost_sum = args.iter().fold(Cost::default(), |sum, a| sum.add(a.cost));
        let target_cost = target.as_ref().map_or(Cost::default(), |t| t.cost);
        // The receiver of a member call, or the first argument of a global one.
        let subject = target.as_ref().or(args.first());
        let function_cost = match function {
            operators::LOGICAL_AND | operators::LOGICAL_OR => {
                let (lhs, rhs) = (args[0].cost, args[1].cost);
                Cost {
                    min: lhs.min,
                    max: lhs.max.saturating_add(rhs.max),
                }
            }
            operators::CONDITIONAL => {
                let (condition, then, otherwise) = (args[0].cost, args[1].cost, args[2].cost);
                Cost {
                    min: condition.min.saturating_add(then.min.min(otherwise.min)),
                    max: condition.max.saturating_add(then.max.max(otherwise.max)),
                }
            }
            "matches" => {
                // One is added to the string's length so that an empty string still costs.
                let string = subject.map_or(u64::MAX, |s| s.size.saturating_add(1));
                let regex = args.last().map_or(u64::MAX, |r| r.size);
                let cost = scaled(string, STRING_TRAVERSAL_COST_FACTOR)
                    .saturating_mul(scaled(regex, REGEX_STRING_LENGTH_COST_FACTOR));
                Cost::fixed(cost).add(arg_cost_sum)
            }
            "contains" => {
                let string = subject.map_or(u64::MAX, |s| s.size);
                let needle = args.last().map_or(u64::MAX, |n| n.size);
                Cost::fixed(
                    scaled(string, STRING_TRAVERSAL_COST_FACTOR)
                        .saturating_mul(scaled(needle, STRING_TRAVERSAL_COST_FACTOR)),
                )
                .add(arg_cost_sum)
            }
            "startsWith" | "endsWith" => {
                let affix = args.last().map_or(u64::MAX, |a| a.size);
                Cost::fixed(scaled(affix, STRING_TRAVERSAL_COST_FACTOR)).add(arg_cost_sum)
            }
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => {
                // Comparing strings traverses the shorter one; other values compare at once.
                let strings = args.iter().any(|a| matches!(a.ty, Ty::Str { .. }));
                let shorter = args.iter().map(|a| a.size).min().unwrap_or(0);
                let traversal = if !strings {
                    0
                } else if shorter == u64::MAX {
                    u64::MAX
                } else {
                    scaled(shorter, STRING_TRAVERSAL_COST_FACTOR)
                };
                Cost {
                    min: 1,
                    max: 1u64.max(traversal),
                }
                .add(arg_cost_sum)
            }
            "size"
            | operators::LOGICAL_NOT
            | operators::NEGATE
            | operators::NOT_STRICTLY_FALSE
            | operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::INDEX
            | "duration"
            | "timestamp"
            | "int"
            | "uint"
            | "double"
            | "string" => Cost::fixed(1).add(arg_cost_sum),
            other => {
                return Err(format!(
                    "the estimator does not know the cost of {other}(): add it as cel-go's \
                     checker/cost.go or the Kubernetes CEL library prices it"
                ));
            }
        };
        Ok(Estimate::of_cost(target_cost.add(function_cost)))
    }
}

/// The worst-case cost of one rule evaluated once against a node of this schema.
pub fn rule_cost(rule: &str, node: &Value) -> Result<u64, String> {
    let parsed = cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| format!("{rule}: {e:?}"))?;
    let mut estimator = Estimator {
        scope: vec![("self".to_owned(), Ty::of(node))],
    };
    Ok(estimator.expr(&parsed)?.cost.max)
}

/// One rule with its cost times the number of times it may run.
#[derive(Debug)]
pub struct RuleCost {
    /// The rule's path in the API server's own spelling.
    pub path: String,
    pub rule: String,
    pub cost: u64,
}

/// Every rule of an `openAPIV3Schema`, with the cost the API server charges for it.
pub fn schema_costs(schema: &Value) -> Result<Vec<RuleCost>, String> {
    let mut found = Vec::new();
    walk(schema, "spec.validation.openAPIV3Schema", 1, &mut found)?;
    Ok(found)
}

fn walk(
    node: &Value,
    path: &str,
    cardinality: u64,
    found: &mut Vec<RuleCost>,
) -> Result<(), String> {
    if let Some(Value::Array(rules)) = node.get("x-kubernetes-validations") {
        for (index, rule) in rules.iter().enumerate() {
            let rule = rule["rule"].as_str().ok_or("a validation without rule")?;
            found.push(RuleCost {
                path: format!("{path}.x-kubernetes-validations[{index}].rule"),
                rule: rule.to_owned(),
                cost: rule_cost(rule, node)?.saturating_mul(cardinality),
            });
        }
    }
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            walk(
                child,
                &format!("{path}.properties[{name}]"),
                cardinality,
                found,
            )?;
        }
    }
    if let Some(items) = node.get("items") {
        let times = Ty::of(node).size();
        walk(
            items,
            &format!("{path}.items"),
            cardinality.saturating_mul(times),
            found,
        )?;
    }
    if let Some(value) = node.get("additionalProperties").filter(|v| v.is_object()) {
        let times = Ty::of(node).size();
        walk(
            value,
            &format!("{path}.additionalProperties"),
            cardinality.saturating_mul(times),
            found,
        )?;
    }
    Ok(())
}

fn exceed_factor(cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    }
}

const ADVICE: &str = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";

/// The API server's refusals of a schema, one line each, as `kubectl apply` prints them (without
/// the leading `* `). Empty when the schema fits.
pub fn refusals(schema: &Value) -> Result<Vec<String>, String> {
    let costs = schema_costs(schema)?;
    let mut lines = Vec::new();
    for rule in &costs {
        if rule.cost > PER_RULE_LIMIT {
            lines.push(format!(
                "{}: Forbidden: estimated rule cost exceeds budget by factor of {} {ADVICE}",
                rule.path,
                exceed_factor(rule.cost, PER_RULE_LIMIT)
            ));
        }
    }
    let total = costs
        .iter()
        .fold(0u64, |sum, rule| sum.saturating_add(rule.cost));
    if total > SCHEMA_LIMIT {
        // The API server names the four most expensive rules that cost at least 1 % of the limit.
        let mut expensive: Vec<&RuleCost> = costs
            .iter()
            .filter(|rule| rule.cost >= SCHEMA_LIMIT / 100)
            .collect();
        expensive.sort_by_key(|rule| std::cmp::Reverse(rule.cost));
        for rule in expensive.into_iter().take(4) {
            lines.push(format!(
                "{}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
                rule.path
            ));
        }
        lines.push(format!(
            "spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of {} {ADVICE}",
            exceed_factor(total, SCHEMA_LIMIT)
        ));
    }
    Ok(lines)
}
