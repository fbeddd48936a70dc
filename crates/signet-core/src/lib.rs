//! Signet's domain model, pure: selectors, registration entries and the rule that matches a
//! workload's selectors to the entries it may use.

mod agent_id;
mod backoff;
mod duration;
mod entry;
pub mod federation;
pub mod k8s_selectors;
pub mod label_selector;
pub mod policy;
pub mod reattest;
mod selector;
pub mod template;

pub use agent_id::{AgentId, AgentIdKind};
pub use backoff::Backoff;
pub use duration::{DurationError, parse_duration, parse_go_duration};
pub use entry::{EntryError, EntryId, RegistrationEntry, server_id};
pub use selector::{Selector, SelectorError, SelectorSet};
pub use template::{RenderError, Template, TemplateContext, TemplateError};
