//! The OpenAPI document, built from the route table so it cannot drift from
//! the router: every operation carries its permission as `x-permission`.

use crate::api::{routes, SchemaList};
use crate::auth::guard::Access;
use axum::http::Method;
use std::sync::LazyLock;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, Paths,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, Ref, ResponseBuilder,
};
use utoipa::openapi::{RefOr, Required, Schema};

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| serde_json::to_string_pretty(&document()).unwrap_or_else(|_| "{}".into()));

pub fn document_json() -> String {
    DOCUMENT.clone()
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut paths = Paths::new();
    let mut schemas: SchemaList = Vec::new();
    for route in routes() {
        let Some(method) = http_method(&route.method) else {
            continue;
        };
        let mut op = OperationBuilder::new()
            .parameters(Some(parameters(&route)))
            .summary(Some(route.summary))
            .operation_id(Some(format!("{} {}", route.method, route.path)))
            .tag(route.path.split('/').nth(3).unwrap_or("system"));
        match route.access {
            Access::Public => {}
            Access::Permission(p) => {
                op = op
                    .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
                    .security(SecurityRequirement::new("session", Vec::<String>::new()))
                    .extensions(Some(
                        ExtensionsBuilder::new()
                            .add("x-permission", p.name())
                            .build(),
                    ))
                    .response(
                        "401",
                        ResponseBuilder::new().description("Not authenticated"),
                    )
                    .response(
                        "403",
                        ResponseBuilder::new().description("Authenticated but not permitted"),
                    );
            }
        }
        if let Some(req) = route.request {
            (req.collect)(&mut schemas);
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(utoipa::openapi::Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name((req.name)())))
                            .build(),
                    )
                    .build(),
            ));
            op = op.response(
                "400",
                ResponseBuilder::new().description("Malformed request"),
            );
        }
        let ok = ResponseBuilder::new().description(match route.status {
            201 => "Created",
            204 => "Done; no body",
            _ => "Success",
        });
        let ok = match route.response {
            Some(res) if route.status != 204 => {
                (res.collect)(&mut schemas);
                let item = Ref::from_schema_name((res.name)());
                let body: RefOr<Schema> = if res.array {
                    ArrayBuilder::new().items(item).build().into()
                } else {
                    item.into()
                };
                ok.content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body)).build(),
                )
            }
            _ => ok,
        };
        op = op.response(route.status.to_string(), ok).response(
            "default",
            ResponseBuilder::new()
                .description("An error: {\"error\":{\"code\",\"message\"}}")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                ),
        );
        paths.add_path_operation(route.path, vec![method], op.build());
    }
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-redwall_session"))),
        );
    schemas.push(("Error".into(), error_schema()));
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Redwall API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Errors are {\"error\":{\"code\",\"message\"}}. Cookie-authenticated state-changing requests need the X-CSRF-Token header.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// Path parameters from the `{name}` segments (all are 128-bit ids in hex),
/// then the route's declared query parameters.
fn parameters(route: &crate::api::Route) -> Vec<Parameter> {
    let id = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{32}$"))
            .build()
    };
    let mut out: Vec<Parameter> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(id()))
                .build()
        })
        .collect();
    for (name, kind, description) in route.query {
        let schema_type = if *kind == "integer" {
            Type::Integer
        } else {
            Type::String
        };
        out.push(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(ObjectBuilder::new().schema_type(schema_type).build()))
                .build(),
        );
    }
    out
}

/// The one error body every endpoint answers with.
fn error_schema() -> RefOr<Schema> {
    let detail = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::String))
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("code")
        .required("message");
    ObjectBuilder::new()
        .property("error", detail)
        .required("error")
        .build()
        .into()
}

fn http_method(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        _ => return None,
    })
}
