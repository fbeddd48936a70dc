#![no_main]
//! Entry templates come from cluster-scoped custom resources: parsing and rendering must never
//! panic, and literal text must render to itself.

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use signet_core::template::{Template, TemplateContext, Value};

struct Data(BTreeMap<String, String>);

impl TemplateContext for Data {
    fn lookup(&self, path: &[String]) -> Option<Value<'_>> {
        match path.first().map(String::as_str) {
            Some("Labels") if path.len() == 1 => Some(Value::Map(&self.0)),
            Some("Name") if path.len() == 1 => Some(Value::Text("pod".into())),
            Some("Meta") if path.len() == 1 => Some(Value::Struct),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(template) = Template::parse(source) {
        let labels = Data(BTreeMap::from([("app".to_owned(), "web".to_owned())]));
        let rendered = template.render(&labels);
        if !source.contains("{{") {
            assert_eq!(rendered.as_deref(), Ok(source));
        }
    }
});
