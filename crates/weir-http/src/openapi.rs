//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the route table (paths,
//! methods, parameters, bodies, answers) and the schemas below, which describe exactly the
//! JSON the handlers read and write. Checked against the running server by schemathesis in
//! the test suite.

use axum::Json;
use serde_json::{json, Map, Value};

use crate::routes::{table, Route};
use crate::topology::COUNTERS;

pub async fn document() -> Json<Value> {
    Json(build())
}

pub fn build() -> Value {
    let mut paths = Map::new();
    for route in table() {
        let item = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(&route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Weir HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage and use a Weir broker. Vhost names are percent-encoded in paths \
                            (the default vhost / is %2F); the default exchange is amq.default. \
                            Errors are JSON {code, message}. Names, routing keys and short message \
                            properties are AMQP short strings: at most 255 bytes of UTF-8 (maxLength \
                            below counts characters, so it is exact for ASCII only).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "basic": { "type": "http", "scheme": "basic" } },
            "schemas": schemas(),
        },
    })
}

fn parameter_schema(name: &str) -> Value {
    match name {
        "id" => json!({ "type": "integer", "format": "int64", "minimum": 0 }),
        "kind" => json!({ "type": "string", "enum": ["q", "e"] }),
        // A lease token: a u64 in decimal (a string, so JavaScript keeps every digit).
        "token" => json!({ "type": "string", "pattern": "^[0-9]{1,20}$" }),
        // Vhost and user names: what AMQP's connection.open and the SASL exchange can carry.
        "vhost" | "user" => {
            json!({ "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\u0000-\\u001f\\u007f]+$" })
        }
        _ => json!({ "type": "string", "minLength": 1 }),
    }
}

/// A path parameter's example value (the examples phase of API testers uses it).
fn example(name: &str) -> Value {
    match name {
        "vhost" => json!("/"),
        "id" => json!(1),
        "kind" => json!("q"),
        "token" => json!("12345"),
        "source" => json!("amq.topic"),
        // Not a real account: generated requests must not change the one the tests log in as.
        "user" => json!("app-user"),
        _ => json!("orders"),
    }
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": parameter_schema(name), "example": example(name) })
        })
        .collect();
    parameters.extend(route.query.iter().map(
        |(name, schema)| json!({ "name": name, "in": "query", "required": false, "schema": query_schema(schema) }),
    ));
    let error = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let mut responses = Map::new();
    let success = match route.success.schema {
        Some(schema) => json!({
            "description": "success",
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
        }),
        None if route.path == "/metrics" => {
            json!({ "description": "success", "content": { "text/plain": { "schema": { "type": "string" } } } })
        }
        None if route.path == "/api/openapi.json" => {
            json!({ "description": "success", "content": { "application/json": { "schema": { "type": "object" } } } })
        }
        None => json!({ "description": "success, no body" }),
    };
    responses.insert(route.success.status.to_string(), success);
    if route.method == axum::http::Method::PUT && route.success.status == 201 {
        // Create-or-change routes: 201 when created, 204 when an existing one was changed.
        responses.insert("204".into(), json!({ "description": "changed, no body" }));
    }
    let mut errors = vec!["400", "404", "503"];
    if route.login {
        errors.extend(["401", "403", "405", "409", "413"]);
    }
    for status in errors {
        responses.insert(status.to_string(), error.clone());
    }
    let mut op = json!({
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": operation_id(route),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = route.body {
        // A body is needed when its schema has required fields (else an empty body is `{}`).
        let required = schemas()[body]["required"].as_array().is_some_and(|fields| !fields.is_empty());
        op["requestBody"] = json!({
            "required": required,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } },
        });
    }
    op["security"] = if route.login { json!([{ "basic": [] }]) } else { json!([]) };
    op
}

/// A query parameter's schema: a bare type name (`"boolean"`), or a JSON schema.
fn query_schema(schema: &str) -> Value {
    if schema.starts_with('{') {
        serde_json::from_str(schema).expect("the route table's query schemas are valid JSON")
    } else {
        json!({ "type": schema })
    }
}

fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for segment in route.path.split('/').filter(|s| !s.is_empty() && *s != "api") {
        let word = segment.trim_matches(|c| c == '{' || c == '}').replace(['.', '-'], "_");
        id.push('_');
        id.push_str(&word);
    }
    id
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

fn list(item: &str) -> Value {
    json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } })
}

/// The settable queue arguments (`weir_engine::QUEUE_SETTINGS`) with their types.
fn settings_schema() -> Value {
    let count = |minimum: u64| json!({ "type": "integer", "minimum": minimum, "maximum": i64::MAX });
    let one_of = |names: &[&str]| json!({ "type": "string", "enum": names });
    let properties: Map<String, Value> = weir_engine::QUEUE_SETTINGS
        .iter()
        .map(|key| {
            let schema = match *key {
                "x-overflow" => one_of(&[
                    "drop-head",
                    "reject-publish",
                    "reject-publish-dlx",
                    "drop-new",
                    "drop-oldest",
                    "drop-lowest-priority",
                ]),
                "x-retry-backoff" => one_of(&["fixed", "exponential"]),
                "x-dead-letter-exchange" | "x-dead-letter-routing-key" => json!({ "type": "string", "maxLength": 255 }),
                "x-delivery-limit" => json!({ "type": "integer", "minimum": 1, "maximum": u16::MAX }),
                "x-expires" => count(1),
                "x-capacity-high" | "x-capacity-low" => json!({ "type": "integer", "minimum": 0, "maximum": 100 }),
                _ => count(0),
            };
            (key.to_string(), schema)
        })
        .collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "dependentRequired": { "x-dead-letter-routing-key": ["x-dead-letter-exchange"] },
    })
}

fn schemas() -> Value {
    let int = json!({ "type": "integer", "minimum": 0 });
    let text = json!({ "type": "string" });
    let flag = json!({ "type": "boolean" });
    // Queue, exchange and binding arguments are flat: scalar values only.
    let args = json!({ "type": "object", "additionalProperties": { "type": ["string", "number", "boolean", "null"] } });
    let short = json!({ "type": "string", "maxLength": 255 });
    let counter_names: Vec<&str> = COUNTERS.iter().map(|(name, _, _)| *name).collect();
    let counters = object(
        &counter_names,
        Value::Object(counter_names.iter().map(|name| (name.to_string(), int.clone())).collect()),
    );
    let queue_fields = [
        "vhost",
        "name",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
        "settings",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "messages_delayed",
        "message_bytes",
        "message_bytes_ready",
        "message_bytes_unacknowledged",
        "message_bytes_delayed",
        "consumers",
        "counters",
    ];
    let properties = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "content_type": short, "content_encoding": short,
            "headers": { "type": "object", "additionalProperties": true },
            "delivery_mode": { "type": "integer", "enum": [1, 2] },
            "priority": { "type": "integer", "minimum": 0, "maximum": 255 },
            "correlation_id": short, "reply_to": short,
            "expiration": { "type": "string", "pattern": "^[0-9]{1,19}$" },
            "message_id": short,
            "timestamp": { "type": "integer", "minimum": 0, "maximum": 9_007_199_254_740_991u64 },
            "type": short, "user_id": short, "app_id": short,
        },
    });
    let publish_fields = json!({
        "payload": text,
        "payload_encoding": { "type": "string", "enum": ["string", "base64"] },
        "properties": { "$ref": "#/components/schemas/Properties" },
    });
    let mut exchange_publish = publish_fields.clone();
    exchange_publish["routing_key"] = short.clone();
    // With "payload_encoding": "base64" the payload must be base64.
    let base64_payload = json!({
        "if": { "properties": { "payload_encoding": { "const": "base64" } }, "required": ["payload_encoding"] },
        "then": { "properties": { "payload": {
            "type": "string",
            "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
        } } },
    });
    let publish_schema = |properties: Value| {
        let mut schema = base64_payload.clone();
        schema["type"] = json!("object");
        schema["additionalProperties"] = json!(false);
        schema["properties"] = properties;
        schema
    };
    let mut all = json!({
        "Error": object(&["code", "message"], json!({ "code": text, "message": text })),
        "Counters": counters,
        "Overview": object(
            &["version", "uptime_ms", "vhosts", "queues", "exchanges", "connections", "channels", "consumers",
              "messages", "messages_ready", "messages_unacknowledged", "messages_delayed", "counters", "log"],
            json!({
                "version": text, "uptime_ms": int, "vhosts": int, "queues": int, "exchanges": int,
                "connections": int, "channels": int, "consumers": int, "messages": int,
                "messages_ready": int, "messages_unacknowledged": int, "messages_delayed": int,
                "counters": { "$ref": "#/components/schemas/Counters" },
                "log": object(&["segments", "bytes", "durable_lsn", "read_only"], json!({
                    "segments": int, "bytes": int, "durable_lsn": int,
                    "read_only": { "type": ["string", "null"] },
                })),
            }),
        ),
        "Vhost": object(&["name", "limits"], json!({ "name": text, "limits": {
            "type": "object", "additionalProperties": { "type": "integer", "minimum": 0 },
        } })),
        "VhostList": list("Vhost"),
        "Queue": object(&queue_fields, json!({
            "vhost": text, "name": text, "durable": flag, "auto_delete": flag, "exclusive": flag,
            "arguments": args, "settings": args, "messages": int, "messages_ready": int, "messages_unacknowledged": int,
            "messages_delayed": int, "message_bytes": int, "message_bytes_ready": int,
            "message_bytes_unacknowledged": int, "message_bytes_delayed": int, "consumers": int,
            "counters": { "$ref": "#/components/schemas/Counters" },
        })),
        "QueueList": list("Queue"),
        "QueueSettings": {
            "type": "object", "additionalProperties": false,
            "properties": { "durable": flag, "auto_delete": flag, "arguments": args },
        },
        "QueueSettingsChange": object(&["settings"], json!({ "settings": settings_schema() })),
        "Removed": object(&["messages"], json!({ "messages": int })),
        "Exchange": object(&["vhost", "name", "type", "durable", "auto_delete", "internal", "arguments"], json!({
            "vhost": text, "name": text, "type": { "type": "string", "enum": ["direct", "fanout", "topic", "headers"] },
            "durable": flag, "auto_delete": flag, "internal": flag, "arguments": args,
        })),
        "ExchangeList": list("Exchange"),
        "ExchangeSettings": {
            "type": "object", "additionalProperties": false, "required": ["type"],
            "properties": {
                "type": { "type": "string", "enum": ["direct", "fanout", "topic", "headers"] },
                "durable": flag, "auto_delete": flag, "internal": flag, "arguments": args,
            },
        },
        "Binding": object(&["vhost", "source", "destination", "destination_type", "routing_key", "arguments"], json!({
            "vhost": text, "source": text, "destination": text,
            "destination_type": { "type": "string", "enum": ["queue", "exchange"] },
            "routing_key": text, "arguments": args,
        })),
        "BindingList": list("Binding"),
        "BindingSettings": {
            "type": "object", "additionalProperties": false,
            "properties": { "routing_key": short, "arguments": args },
        },
        "Connection": object(&["id", "vhost", "user", "peer", "client", "channels", "consumers", "messages_unacknowledged"], json!({
            "id": int, "vhost": text, "user": text, "peer": text, "client": text,
            "channels": int, "consumers": int, "messages_unacknowledged": int,
        })),
        "ConnectionList": list("Connection"),
        "Properties": properties,
        "Publish": publish_schema(exchange_publish),
        "QueuePublish": publish_schema(publish_fields),
        "PublishResult": object(&["routed"], json!({ "routed": flag })),
        "GetRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "count": { "type": "integer", "minimum": 1, "maximum": crate::messages::GET_COUNT_MAX },
                "ackmode": { "type": "string", "enum": ["remove", "requeue", "browse", "lease"] },
                "lease_ms": { "type": "integer", "minimum": 1, "maximum": 604_800_000 },
                "wait_ms": { "type": "integer", "minimum": 0, "maximum": crate::messages::GET_WAIT_MS_MAX },
                "encoding": { "type": "string", "enum": ["auto", "base64"] },
                "message_id": text, "correlation_id": text,
                "selector": { "type": "string", "minLength": 1, "maxLength": weir_engine::selector::SOURCE_BYTES_MAX },
            },
        },
        "Message": object(
            &["payload", "payload_encoding", "payload_bytes", "redelivered", "exchange", "routing_key", "message_count", "properties"],
            json!({
                "payload": text,
                "payload_encoding": { "type": "string", "enum": ["string", "base64"] },
                "payload_bytes": int, "redelivered": flag, "exchange": text, "routing_key": text,
                "message_count": { "type": ["integer", "null"], "minimum": 0 },
                "properties": { "type": "object" },
                "lease": object(&["token", "until_ms"], json!({ "token": text, "until_ms": int })),
            }),
        ),
        "MessageList": list("Message"),
        "BrowsedMessage": {
            "allOf": [
                { "$ref": "#/components/schemas/Message" },
                object(&["state", "seq", "priority", "delivery_count"], json!({
                    "state": { "type": "string", "enum": ["ready", "delayed", "unacked"] },
                    "seq": int, "priority": int, "delivery_count": int,
                })),
            ],
        },
        "LeaseSettle": {
            "type": "object", "additionalProperties": false, "required": ["action"],
            "properties": {
                "action": { "type": "string", "enum": ["ack", "requeue", "reject", "renew"] },
                "lease_ms": { "type": "integer", "minimum": 1, "maximum": 604_800_000 },
            },
        },
        "LeaseResult": object(&["token", "until_ms"], json!({ "token": text, "until_ms": int })),
        "MoveRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "target": { "type": "string", "minLength": 1, "maxLength": 255 },
                "count": { "type": "integer", "minimum": 1, "maximum": crate::messages::MOVE_COUNT_MAX },
                "message_id": text, "correlation_id": text,
                "selector": { "type": "string", "minLength": 1, "maxLength": weir_engine::selector::SOURCE_BYTES_MAX },
            },
        },
        "MoveResult": object(&["moved", "skipped", "done", "target_full"], json!({
            "moved": int, "skipped": int, "done": flag, "target_full": flag,
        })),
        "BrowsePage": object(&["messages", "next"], json!({
            "messages": list("BrowsedMessage"),
            "next": { "type": ["string", "null"] },
        })),
    });
    let (Value::Object(all_map), Value::Object(security)) = (&mut all, security_schemas()) else {
        unreachable!("both are objects")
    };
    all_map.extend(security);
    all
}

/// Vhost management, users and permissions (apart: one `json!` for everything is too deep).
fn security_schemas() -> Value {
    use crate::users::LIMIT_MAX;
    use weir_engine::security::PATTERN_LEN_MAX;
    let text = json!({ "type": "string" });
    let flag = json!({ "type": "boolean" });
    json!({
        "VhostSettings": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "description": text,
                "limits": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "max-queues": { "type": "integer", "minimum": 0, "maximum": LIMIT_MAX },
                        "max-connections": { "type": "integer", "minimum": 0, "maximum": LIMIT_MAX },
                        "max-messages": { "type": "integer", "minimum": 0, "maximum": LIMIT_MAX },
                        "max-bytes": { "type": "integer", "minimum": 0, "maximum": LIMIT_MAX },
                    },
                },
            },
        },
        "Whoami": object(&["name", "tags", "administrator"], json!({
            "name": text, "tags": { "type": "array", "items": text }, "administrator": flag,
        })),
        "User": object(&["name", "tags", "administrator", "password_hash"], json!({
            "name": text, "tags": { "type": "array", "items": text }, "administrator": flag,
            "password_hash": { "type": "string", "description": "argon2 PHC string (shown to administrators only; else empty); empty: no password login" },
        })),
        "UserList": list("User"),
        "UserSettings": {
            "type": "object", "additionalProperties": false,
            "not": { "required": ["password", "password_hash"] },
            "properties": {
                "password": { "type": "string", "minLength": 1 },
                "password_hash": { "type": "string", "description": "argon2 PHC string, or empty" },
                "tags": { "oneOf": [
                    { "type": "string", "description": "comma-separated" },
                    { "type": "array", "items": text },
                ] },
            },
        },
        "Permission": object(&["user", "vhost", "configure", "write", "read"], json!({
            "user": text, "vhost": text, "configure": text, "write": text, "read": text,
        })),
        "PermissionList": list("Permission"),
        "PermissionSettings": {
            "type": "object", "additionalProperties": false, "required": ["configure", "write", "read"],
            "properties": {
                "configure": { "type": "string", "maxLength": PATTERN_LEN_MAX },
                "write": { "type": "string", "maxLength": PATTERN_LEN_MAX },
                "read": { "type": "string", "maxLength": PATTERN_LEN_MAX },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_schema_reference_resolves() {
        let doc = build();
        for route in table() {
            let method = route.method.as_str().to_ascii_lowercase();
            assert!(doc["paths"][route.path][&method].is_object(), "{method} {} missing", route.path);
        }
        let text = doc.to_string();
        for reference in text.split("#/components/schemas/").skip(1) {
            let name: String = reference.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(doc["components"]["schemas"][&name].is_object(), "schema {name} is referenced but not defined");
        }
    }

    /// The route table writes some limits as text: they must be the limits the code enforces.
    #[test]
    fn query_limits_in_the_table_match_the_constants() {
        let doc = build();
        let parameters = doc["paths"]["/api/queues/{vhost}/{name}/messages"]["get"]["parameters"].as_array().unwrap();
        let schema = |name: &str| parameters.iter().find(|p| p["name"] == name).unwrap()["schema"].clone();
        assert_eq!(schema("limit")["maximum"], crate::messages::BROWSE_LIMIT_MAX);
        assert_eq!(schema("selector")["maxLength"], weir_engine::selector::SOURCE_BYTES_MAX);
    }
}
