//! The OpenAPI document, built from the route table so it cannot drift from
//! the router: every operation carries its permission as `x-permission`.

use crate::api::{routes, SchemaList};
use crate::auth::guard::Access;
use axum::http::Method;
use std::sync::LazyLock;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, Ref, ResponseBuilder,
};

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
        let ok = ResponseBuilder::new().description("Success");
        let ok = match route.response {
            Some(res) => {
                (res.collect)(&mut schemas);
                ok.content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name((res.name)())))
                        .build(),
                )
            }
            None => ok,
        };
        op = op.response("200", ok);
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
