// Swagger UI on this service's OpenAPI document. A file of its own: the page's
// Content-Security-Policy allows no inline script.
"use strict";

window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  validatorUrl: null, // the default sends the document to an outside validator
});
