//! Checks a request against the CRM's own OpenAPI files (`shared/ghl/openapi/`, GoHighLevel's, unchanged), so
//! the fake CRM refuses what the real one would refuse instead of accepting anything followd happens to send.
//!
//! The files are read in place, once per test binary, from `../shared/ghl/openapi/` beside the repository;
//! they are never copied in. [`validate`] finds the operation by method and path template, checks the required
//! header and query parameters (a `Version` outside its `enum` included) and the request body against its
//! schema. It is a small hand-written validator for the subset of JSON Schema these files use on the request
//! bodies followd sends (`FollowersDTO`, `SearchBodyV2DTO`, `GetAccessCodebodyDto`):
//!
//! - supported: `type` (`object`, `array`, `string`, `number`, `integer`, `boolean`, `null`), `properties`,
//!   `required`, `enum`, `items`, `$ref` (local `#/components/schemas/X` and cross-file
//!   `../common/common-schemas.json#/components/schemas/Y`), `allOf`, `oneOf`, `anyOf`, and
//!   `additionalProperties: false`;
//! - ignored: annotations (`description`, `example`, `default`, `deprecated`) and the keywords that occur in
//!   these files but on no request body followd sends (`nullable`, `format`). Any other keyword is ignored too.
//!
//! One gap in the CRM's files is filled here: `SearchBodyV2DTO` (the body of `POST /contacts/search`) is an
//! empty object schema in both `contacts.json` and `v3/contacts-v3.json`, which would let any body pass. While
//! it is still empty, [`search_body_schema`] replaces it in memory with the body the CRM's search docs
//! describe (`ghl/API.md` §13, `DESIGN.md` "Reading the CRM"); the day GoHighLevel publishes a real schema,
//! theirs wins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// The files holding the operations followd calls, relative to the OpenAPI folder.
const OPERATION_FILES: [&str; 4] =
    ["apps/contacts.json", "apps/opportunities.json", "apps/oauth.json", "apps/users.json"];
/// The file the operation files reference with `../common/common-schemas.json#/...`.
const COMMON_FILE: &str = "common/common-schemas.json";

/// A request the CRM would refuse: the status it would answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// 400 for a missing or wrong `Version` header, 422 for a body or query the schema refuses, 404 for a
    /// method and path that no operation in the files serves.
    pub status: u16,
    pub message: String,
}

/// The loaded OpenAPI documents, keyed by their path under the OpenAPI folder (`apps/contacts.json`).
struct Spec {
    documents: HashMap<String, Value>,
}

/// Where GoHighLevel's OpenAPI files are: in `shared/`, next to the repository.
fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/ghl/openapi")
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut documents = HashMap::new();
        for file in OPERATION_FILES.iter().chain([&COMMON_FILE]) {
            let path = folder().join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read the CRM's OpenAPI file {}: {e}", path.display()));
            let document: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the CRM's OpenAPI file {} is not JSON: {e}", path.display()));
            documents.insert((*file).to_owned(), document);
        }
        if let Some(schemas) = documents
            .get_mut("apps/contacts.json")
            .and_then(|d| d.pointer_mut("/components/schemas"))
            .and_then(Value::as_object_mut)
        {
            fill_search_body(schemas);
        }
        Spec { documents }
    })
}

/// Replaces the empty `SearchBodyV2DTO` with [`search_body_schema`], keeping a non-empty one as published.
fn fill_search_body(schemas: &mut Map<String, Value>) {
    let empty = schemas
        .get("SearchBodyV2DTO")
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if empty && let Value::Object(ours) = search_body_schema() {
        schemas.extend(ours);
    }
}

/// The search body as the CRM's search docs describe it (`ghl/API.md` §13; the public copy of the linked
/// ClickUp page lists `locationId` and `pageLimit` as required, `pageLimit` ≤ 500, `page` not together with
/// `searchAfter`, filters `{field, operator, value}` or `{group: AND|OR, filters}`, up to 2 `sort` keys, and a
/// free-text `query`). Unknown top-level names are refused so that a misspelt `pageLimit` shows up in tests.
fn search_body_schema() -> Value {
    json!({
        "SearchBodyV2DTO": {
            "type": "object",
            "required": ["locationId", "pageLimit"],
            "additionalProperties": false,
            "properties": {
                "locationId": {"type": "string"},
                "page": {"type": "integer"},
                "pageLimit": {"type": "integer"},
                "searchAfter": {"type": "array"},
                "filters": {"type": "array", "items": {"$ref": "#/components/schemas/SearchFilterOrGroup"}},
                "sort": {"type": "array", "items": {"$ref": "#/components/schemas/SearchSort"}},
                "query": {"type": "string"}
            }
        },
        "SearchFilterOrGroup": {
            "oneOf": [
                {"$ref": "#/components/schemas/SearchFilter"},
                {"$ref": "#/components/schemas/SearchFilterGroup"}
            ]
        },
        "SearchFilter": {
            "type": "object",
            "required": ["field", "operator"],
            "additionalProperties": false,
            "properties": {
                "field": {"type": "string"},
                "operator": {
                    "type": "string",
                    "enum": ["eq", "not_eq", "contains", "not_contains", "exists", "not_exists", "range"]
                },
                "value": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "object"}]}
            }
        },
        "SearchFilterGroup": {
            "type": "object",
            "required": ["group", "filters"],
            "additionalProperties": false,
            "properties": {
                "group": {"type": "string", "enum": ["AND", "OR"]},
                "filters": {"type": "array", "items": {"$ref": "#/components/schemas/SearchFilterOrGroup"}}
            }
        },
        "SearchSort": {
            "type": "object",
            "required": ["field", "direction"],
            "properties": {"field": {"type": "string"}, "direction": {"type": "string", "enum": ["asc", "desc"]}}
        }
    })
}

/// Checks one request; `Err` lists every reason the CRM's OpenAPI files give for refusing it. `path` may
/// carry a query string (`/opportunities/pipelines?locationId=loc-1`). A form body (`POST /oauth/token`) is
/// passed as an object of strings.
pub fn validate(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Result<(), Vec<String>> {
    let violations = check(method, path, headers, body);
    if violations.is_empty() { Ok(()) } else { Err(violations.into_iter().map(|v| v.message).collect()) }
}

/// As [`validate`], with the status the CRM would answer for each violation.
pub fn check(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Vec<Violation> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let request = format!("{} {path}", method.to_uppercase());
    let Some((file, operation)) = find_operation(method, path) else {
        return vec![Violation {
            status: 404,
            message: format!("{request}: no operation in the CRM's OpenAPI files serves this method and path"),
        }];
    };
    let mut violations = Vec::new();
    for parameter in operation.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let name = parameter.get("name").and_then(Value::as_str).unwrap_or_default();
        let required = parameter.get("required").and_then(Value::as_bool).unwrap_or(false);
        let (value, status) = match parameter.get("in").and_then(Value::as_str) {
            Some("header") => (headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v), 400),
            Some("query") => (query_value(query, name), 422),
            _ => continue, // path parameters matched the template already
        };
        match value {
            None if required => violations.push(Violation {
                status,
                message: format!(
                    "{request}: the required {} `{name}` is missing",
                    parameter["in"].as_str().unwrap_or("")
                ),
            }),
            None => {}
            Some(value) => {
                let allowed = parameter.pointer("/schema/enum").and_then(Value::as_array);
                if allowed.is_some_and(|allowed| !allowed.iter().any(|a| a.as_str() == Some(value))) {
                    violations.push(Violation {
                        status,
                        message: format!(
                            "{request}: `{name}: {value}` is not one of {}",
                            parameter.pointer("/schema/enum").map(Value::to_string).unwrap_or_default()
                        ),
                    });
                }
            }
        }
    }
    if let Some(request_body) = operation.get("requestBody") {
        let content = request_body.get("content").and_then(Value::as_object);
        let sent = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| *v);
        let media = sent.map(|v| v.split(';').next().unwrap_or_default().trim().to_lowercase());
        let schema = match (content, body, media) {
            (Some(content), Some(_), Some(media)) if !content.contains_key(&media) => {
                let accepted: Vec<&String> = content.keys().collect();
                violations.push(Violation {
                    status: 422,
                    message: format!("{request}: a body of type `{media}`, the operation takes {accepted:?}"),
                });
                None
            }
            (Some(content), _, Some(media)) => content.get(&media).and_then(|m| m.get("schema")),
            // Without a Content-Type the CRM's framework leaves the body unparsed, so every field is missing.
            (Some(_), Some(_), None) => {
                violations.push(Violation { status: 422, message: format!("{request}: a body without Content-Type") });
                None
            }
            _ => None,
        };
        match (body, schema) {
            (None, _) if request_body.get("required").and_then(Value::as_bool).unwrap_or(false) => {
                violations.push(Violation { status: 422, message: format!("{request}: the required body is missing") })
            }
            (Some(body), Some(schema)) => {
                let mut messages = Vec::new();
                check_schema(file, schema, body, "body", &mut messages);
                violations.extend(
                    messages.into_iter().map(|m| Violation { status: 422, message: format!("{request}: {m}") }),
                );
            }
            _ => {}
        }
    }
    violations
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The operation serving `method` on `path`, and the file it is in. Where several templates match
/// (`/contacts/search` and `/contacts/{contactId}`), the one with more literal segments wins, as in routers.
fn find_operation(method: &str, path: &str) -> Option<(&'static str, &'static Value)> {
    let method = method.to_lowercase();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let spec = spec();
    OPERATION_FILES
        .iter()
        .filter_map(|file| Some((*file, spec.documents.get(*file)?.get("paths")?.as_object()?)))
        .flat_map(|(file, paths)| paths.iter().map(move |(template, item)| (file, template, item)))
        .filter_map(|(file, template, item)| {
            let literals = template_match(template, &segments)?;
            Some((literals, file, item.get(&method)?))
        })
        .max_by_key(|(literals, _, _)| *literals)
        .map(|(_, file, operation)| (file, operation))
}

/// How many literal segments of `template` match `segments`, or `None` when it does not match.
fn template_match(template: &str, segments: &[&str]) -> Option<usize> {
    let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut literals = 0;
    for (part, segment) in parts.iter().zip(segments) {
        if part.starts_with('{') && part.ends_with('}') {
            if segment.is_empty() {
                return None;
            }
        } else if part == segment {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

/// Follows a `$ref` written in `file`; returns the file the target lives in (its own refs are relative to
/// it) and the target schema.
fn resolve(file: &str, reference: &str) -> Option<(&'static str, &'static Value)> {
    let (target, pointer) = reference.split_once('#').unwrap_or((reference, ""));
    let target = if target.is_empty() { file.to_owned() } else { join(file, target) };
    let (key, document) = spec().documents.get_key_value(&target)?;
    Some((key.as_str(), document.pointer(pointer)?))
}

/// `apps/contacts.json` + `../common/common-schemas.json` → `common/common-schemas.json`.
fn join(file: &str, relative: &str) -> String {
    let mut parts: Vec<&str> = file.split('/').collect();
    parts.pop();
    for part in relative.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Checks `value` (found at `at`) against `schema` (written in `file`), pushing one message per violation.
fn check_schema(file: &str, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        match resolve(file, reference) {
            Some((file, target)) => check_schema(file, target, value, at, out),
            None => out.push(format!("{at}: the schema refers to `{reference}`, which the OpenAPI files lack")),
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, expected)
    {
        out.push(format!("{at}: expected {expected}, got {}", type_name(value)));
        return; // the other keywords would only repeat the type mismatch
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {}", Value::Array(allowed.clone())));
    }
    for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        check_schema(file, part, value, at, out);
    }
    if let Some(choices) = schema.get("anyOf").and_then(Value::as_array) {
        let failures: Vec<Vec<String>> = choices.iter().map(|c| attempt(file, c, value, at)).collect();
        if !failures.iter().any(Vec::is_empty) {
            out.push(format!("{at}: matches none of anyOf ({})", failures.concat().join("; ")));
        }
    }
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let failures: Vec<Vec<String>> = choices.iter().map(|c| attempt(file, c, value, at)).collect();
        match failures.iter().filter(|f| f.is_empty()).count() {
            1 => {}
            0 => out.push(format!("{at}: matches none of oneOf ({})", failures.concat().join("; "))),
            n => out.push(format!("{at}: matches {n} schemas of oneOf, exactly one must match")),
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                out.push(format!("{at}.{name}: required, missing"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check_schema(file, property, field, &format!("{at}.{name}"), out),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    out.push(format!("{at}.{name}: not a property the schema allows"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check_schema(file, items, item, &format!("{at}[{i}]"), out);
        }
    }
}

fn attempt(file: &str, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    check_schema(file, schema, value, at, &mut out);
    out
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true, // not a JSON Schema type: nothing to hold the value to
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    // The benches include `support/` and build it with `cfg(test)` but without the test harness, which drops
    // the `#[test]` functions and leaves this import unused there.
    #[allow(unused_imports)]
    use super::*;

    const V2: (&str, &str) = ("Version", "2021-07-28");
    const JSON: (&str, &str) = ("Content-Type", "application/json");
    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

    #[test]
    fn a_valid_followers_body_passes() {
        let body = json!({"followers": ["usr_1", "usr_2"]});
        assert_eq!(validate("POST", "/contacts/c-1/followers", &[V2, JSON], Some(&body)), Ok(()));
        assert_eq!(validate("DELETE", "/contacts/c-1/followers", &[V2, JSON], Some(&body)), Ok(()));
    }

    #[test]
    fn a_followers_string_instead_of_a_list_fails_naming_the_field() {
        let errors = validate("POST", "/contacts/c-1/followers", &[V2, JSON], Some(&json!({"followers": "usr_1"})))
            .expect_err("a string is not an array");
        assert!(errors.iter().any(|e| e.contains("body.followers") && e.contains("expected array")), "{errors:?}");
    }

    #[test]
    fn a_followers_body_without_followers_fails() {
        let errors =
            validate("DELETE", "/contacts/c-1/followers", &[V2, JSON], Some(&json!({}))).expect_err("required");
        assert!(errors.iter().any(|e| e.contains("body.followers: required")), "{errors:?}");
    }

    #[test]
    fn a_missing_version_header_fails_with_400() {
        let violations = check("GET", "/contacts/c-1", &[("Authorization", "Bearer x")], None);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].status, 400);
        assert!(violations[0].message.contains("`Version` is missing"), "{violations:?}");
    }

    #[test]
    fn the_v3_version_on_a_v2_path_fails() {
        let body = json!({"followers": ["usr_1"]});
        let violations = check("POST", "/contacts/c-1/followers", &[("version", "v3"), JSON], Some(&body));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].status, 400);
        assert!(violations[0].message.contains("`Version: v3` is not one of"), "{violations:?}");
    }

    #[test]
    fn a_search_body_with_a_text_page_limit_fails() {
        let body = json!({"locationId": "loc-1", "pageLimit": "x"});
        let errors = validate("POST", "/contacts/search", &[V2, JSON], Some(&body)).expect_err("pageLimit is a number");
        assert!(errors.iter().any(|e| e.contains("body.pageLimit: expected integer, got string")), "{errors:?}");
    }

    #[test]
    fn a_valid_search_body_with_a_cursor_passes() {
        let body = json!({
            "locationId": "loc-1",
            "pageLimit": 500,
            "searchAfter": [1_767_225_600_000_i64, "c-1"],
            "filters": [
                {"field": "tags", "operator": "contains", "value": "vip"},
                {"group": "OR", "filters": [{"field": "id", "operator": "eq", "value": "c-1"}]}
            ]
        });
        assert_eq!(validate("POST", "/contacts/search", &[V2, JSON], Some(&body)), Ok(()));
    }

    #[test]
    fn a_search_filter_with_an_unknown_operator_or_a_misspelt_name_fails() {
        let body = json!({"locationId": "loc-1", "pageLimit": 1, "limit": 1,
                          "filters": [{"field": "id", "operator": "equals", "value": "c-1"}]});
        let errors = validate("POST", "/contacts/search", &[V2, JSON], Some(&body)).expect_err("two mistakes");
        assert!(errors.iter().any(|e| e.contains("body.limit: not a property")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("body.filters[0]: matches none of oneOf")), "{errors:?}");
    }

    #[test]
    fn a_pipelines_request_needs_its_location_query() {
        assert_eq!(validate("GET", "/opportunities/pipelines?locationId=loc-1", &[V2], None), Ok(()));
        let violations = check("GET", "/opportunities/pipelines", &[V2], None);
        assert_eq!(violations.iter().map(|v| v.status).collect::<Vec<_>>(), [422], "{violations:?}");
    }

    #[test]
    fn a_token_form_is_checked_against_its_schema_including_enums() {
        let form = json!({"client_id": "a", "client_secret": "b", "grant_type": "refresh_token", "refresh_token": "r"});
        assert_eq!(validate("POST", "/oauth/token", &[FORM], Some(&form)), Ok(()));
        let errors =
            validate("POST", "/oauth/token", &[FORM], Some(&json!({"client_id": "a", "grant_type": "refresh"})))
                .expect_err("no secret, unknown grant");
        assert!(errors.iter().any(|e| e.contains("body.client_secret: required")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("body.grant_type: \"refresh\" is not one of")), "{errors:?}");
    }

    #[test]
    fn cross_file_references_resolve_to_the_common_schemas() {
        let (file, schema) =
            resolve("apps/contacts.json", "../common/common-schemas.json#/components/schemas/BadRequestDTO")
                .expect("the common file is loaded");
        assert_eq!(file, COMMON_FILE);
        assert_eq!(schema.pointer("/properties/statusCode/type"), Some(&json!("number")));
    }

    #[test]
    fn a_path_no_operation_serves_is_reported() {
        let violations = check("POST", "/contacts/c-1/followerz", &[V2, JSON], Some(&json!({})));
        assert_eq!(violations.iter().map(|v| v.status).collect::<Vec<_>>(), [404], "{violations:?}");
    }

    #[test]
    fn a_body_needs_the_content_type_its_operation_takes() {
        let body = json!({"followers": ["usr_1"]});
        let missing = validate("POST", "/contacts/c-1/followers", &[V2], Some(&body)).expect_err("no type");
        assert!(missing.iter().any(|e| e.contains("without Content-Type")), "{missing:?}");
        let form = validate("POST", "/contacts/c-1/followers", &[V2, FORM], Some(&body)).expect_err("a form");
        assert!(form.iter().any(|e| e.contains("application/x-www-form-urlencoded")), "{form:?}");
        let json_token = json!({"client_id": "a", "client_secret": "b", "grant_type": "refresh_token"});
        assert!(
            validate("POST", "/oauth/token", &[JSON], Some(&json_token)).is_err(),
            "the token endpoint takes a form"
        );
    }
}
