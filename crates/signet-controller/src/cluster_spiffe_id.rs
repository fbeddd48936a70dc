//! A ClusterSPIFFEID compiled once (templates parsed, selectors typed, TTLs parsed) and rendered
//! per pod into a registration entry.

use std::time::Duration;

use signet_api::ClusterSPIFFEID;
use signet_core::{
    EntryId, RegistrationEntry, RenderError, SelectorSet, Template, TemplateError,
    parse_go_duration,
};
use signet_spiffe::{SpiffeId, TrustDomain};

use crate::label_selector::{self, LabelSelectorError, Selector as LabelSelector};
use crate::pod_context::{PodContext, check_fields};

/// Why a ClusterSPIFFEID cannot be used (status reason in brackets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// A template does not parse or names an unknown field (`InvalidTemplate`).
    #[error("{field}: {message}")]
    Template {
        /// Which template (`spiffeIDTemplate`, `dnsNameTemplates[1]`, ...).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A label selector is invalid (`InvalidSelector`).
    #[error("{field}: {source}")]
    Selector {
        /// `podSelector` or `namespaceSelector`.
        field: &'static str,
        /// What is wrong.
        source: LabelSelectorError,
    },
    /// Another field is invalid (`InvalidSpec`).
    #[error("{field}: {message}")]
    Spec {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl CompileError {
    /// The `Ready` condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Template { .. } => "InvalidTemplate",
            Self::Selector { .. } => "InvalidSelector",
            Self::Spec { .. } => "InvalidSpec",
        }
    }
}

/// Why one pod's entry could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodRenderError {
    /// A template failed for this pod.
    #[error("{field}: {source}")]
    Template {
        /// Which template.
        field: String,
        /// Why.
        source: RenderError,
    },
    /// The rendered SPIFFE ID is not valid.
    #[error("rendered SPIFFE ID {id:?}: {message}")]
    SpiffeId {
        /// The rendered text.
        id: String,
        /// Why it is refused.
        message: String,
    },
    /// A rendered selector is not `type:value`.
    #[error("rendered selector {0:?} is not type:value")]
    Selector(String),
    /// A rendered DNS name is not a DNS name.
    #[error("rendered DNS name {0:?} is not a valid DNS name")]
    DnsName(String),
}

/// Ordering of sources for masking: older first, then lower UID (as spire-controller-manager).
pub type SourceOrder = (String, String);

/// A usable ClusterSPIFFEID.
#[derive(Debug, Clone)]
pub struct CompiledClusterSpiffeId {
    /// Resource name.
    pub name: String,
    /// Generation compiled.
    pub generation: Option<i64>,
    /// Masking order.
    pub order: SourceOrder,
    /// Applies only to pods no other identity covers.
    pub fallback: bool,
    /// Namespaces selected.
    pub namespace_selector: LabelSelector,
    /// Pods selected.
    pub pod_selector: LabelSelector,
    /// `autoPopulateDNSNames` was requested (accepted for compatibility, not applied yet).
    pub auto_populate_dns_names: bool,
    spiffe_id: Template,
    selector_templates: Vec<Template>,
    dns_templates: Vec<Template>,
    x509_ttl: Option<Duration>,
    jwt_ttl: Option<Duration>,
    federates_with: Vec<TrustDomain>,
    admin: bool,
    downstream: bool,
    hint: String,
}

fn template(field: String, source: &str) -> Result<Template, CompileError> {
    let parsed = Template::parse(source).map_err(|e: TemplateError| CompileError::Template {
        field: field.clone(),
        message: e.to_string(),
    })?;
    check_fields(&parsed).map_err(|e| CompileError::Template {
        field,
        message: e.to_string(),
    })?;
    Ok(parsed)
}

fn ttl(field: &'static str, value: Option<&String>) -> Result<Option<Duration>, CompileError> {
    let Some(text) = value else { return Ok(None) };
    let parsed = parse_go_duration(text).map_err(|e| CompileError::Spec {
        field,
        message: e.to_string(),
    })?;
    Ok((!parsed.is_zero()).then_some(parsed))
}

/// The masking order of a Kubernetes object.
pub fn source_order(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> SourceOrder {
    (
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second().to_string())
            .map(|s| format!("{s:0>20}"))
            .unwrap_or_default(),
        meta.uid.clone().unwrap_or_default(),
    )
}

impl CompiledClusterSpiffeId {
    /// Compiles a resource.
    pub fn compile(resource: &ClusterSPIFFEID) -> Result<Self, CompileError> {
        let spec = &resource.spec;
        let federates_with = spec
            .federates_with
            .iter()
            .map(|td| {
                TrustDomain::new(td).map_err(|e| CompileError::Spec {
                    field: "federatesWith",
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: resource.metadata.name.clone().unwrap_or_default(),
            generation: resource.metadata.generation,
            order: source_order(&resource.metadata),
            fallback: spec.fallback,
            auto_populate_dns_names: spec.auto_populate_dns_names,
            namespace_selector: label_selector::parse(spec.namespace_selector.as_ref()).map_err(
                |source| CompileError::Selector {
                    field: "namespaceSelector",
                    source,
                },
            )?,
            pod_selector: label_selector::parse(spec.pod_selector.as_ref()).map_err(|source| {
                CompileError::Selector {
                    field: "podSelector",
                    source,
                }
            })?,
            spiffe_id: template("spiffeIDTemplate".into(), &spec.spiffe_id_template)?,
            selector_templates: spec
                .workload_selector_templates
                .iter()
                .enumerate()
                .map(|(i, t)| template(format!("workloadSelectorTemplates[{i}]"), t))
                .collect::<Result<_, _>>()?,
            dns_templates: spec
                .dns_name_templates
                .iter()
                .enumerate()
                .map(|(i, t)| template(format!("dnsNameTemplates[{i}]"), t))
                .collect::<Result<_, _>>()?,
            x509_ttl: ttl("ttl", spec.ttl.as_ref())?,
            jwt_ttl: ttl("jwtTtl", spec.jwt_ttl.as_ref())?,
            federates_with,
            admin: spec.admin,
            downstream: spec.downstream,
            hint: spec.hint.clone().unwrap_or_default(),
        })
    }

    /// Whether two compilations would render the same entries.
    pub fn same_output(&self, other: &Self) -> bool {
        self.spiffe_id == other.spiffe_id
            && self.selector_templates == other.selector_templates
            && self.dns_templates == other.dns_templates
            && self.x509_ttl == other.x509_ttl
            && self.jwt_ttl == other.jwt_ttl
            && self.federates_with == other.federates_with
            && (self.admin, self.downstream, self.fallback)
                == (other.admin, other.downstream, other.fallback)
            && self.auto_populate_dns_names == other.auto_populate_dns_names
            && self.hint == other.hint
            && self.order == other.order
            && self.namespace_selector == other.namespace_selector
            && self.pod_selector == other.pod_selector
    }

    /// Renders the entry of one pod whose node's agent is `parent`. `service_names` are the DNS
    /// names of the Services selecting the pod (added after the templates' names when the
    /// resource sets autoPopulateDNSNames; the first DNS name becomes the certificate's CN).
    pub fn render(
        &self,
        context: &PodContext<'_>,
        parent: &SpiffeId,
        trust_domain: &TrustDomain,
        defaults: (Duration, Duration),
        service_names: &[String],
    ) -> Result<RegistrationEntry, PodRenderError> {
        let render = |field: String, t: &Template| {
            t.render(context)
                .map_err(|source| PodRenderError::Template { field, source })
        };
        let id_text = render("spiffeIDTemplate".into(), &self.spiffe_id)?;
        let spiffe_id = SpiffeId::new(&id_text).map_err(|e| PodRenderError::SpiffeId {
            id: id_text.clone(),
            message: e.to_string(),
        })?;
        let pod_uid = context.pod.meta.uid.as_str();
        let mut selectors = SelectorSet::new();
        selectors.insert(
            signet_core::k8s_selectors::workload::pod_uid(pod_uid)
                .map_err(|_| PodRenderError::Selector(format!("k8s:pod-uid:{pod_uid}")))?,
        );
        for (i, t) in self.selector_templates.iter().enumerate() {
            let text = render(format!("workloadSelectorTemplates[{i}]"), t)?;
            selectors.insert(text.parse().map_err(|_| PodRenderError::Selector(text))?);
        }
        let mut dns_names: Vec<String> = Vec::new();
        for (i, t) in self.dns_templates.iter().enumerate() {
            let name = render(format!("dnsNameTemplates[{i}]"), t)?;
            if !is_dns_name(&name) {
                return Err(PodRenderError::DnsName(name));
            }
            if !dns_names.contains(&name) {
                dns_names.push(name);
            }
        }
        if self.auto_populate_dns_names {
            for name in service_names {
                if !is_dns_name(name) {
                    return Err(PodRenderError::DnsName(name.clone()));
                }
                if !dns_names.contains(name) {
                    dns_names.push(name.clone());
                }
            }
        }
        let mut entry = RegistrationEntry {
            id: EntryId::new(format!("csid/{}/{pod_uid}", self.name)),
            spiffe_id,
            parent_id: parent.clone(),
            selectors,
            x509_svid_ttl: self.x509_ttl.unwrap_or(defaults.0),
            jwt_svid_ttl: self.jwt_ttl.unwrap_or(defaults.1),
            dns_names,
            federates_with: self.federates_with.clone(),
            admin: self.admin,
            downstream: self.downstream,
            hint: self.hint.clone(),
            revision: 0,
        };
        entry
            .validate(trust_domain)
            .map_err(|e| PodRenderError::SpiffeId {
                id: id_text,
                message: e.to_string(),
            })?;
        entry.revision = entry.content_revision();
        Ok(entry)
    }
}

/// A DNS name or wildcard name as certificate SANs allow (RFC 1123 labels, optional leading `*.`).
pub fn is_dns_name(name: &str) -> bool {
    signet_spiffe::DnsName::new(name).is_ok()
}
