// ReDoc on this service's OpenAPI document. A file of its own: the page's
// Content-Security-Policy allows no inline script. ReDoc writes its styles into <style> elements;
// the policy accepts those that carry this response's nonce, which ReDoc sets from `nonce`.
// No search box: ReDoc's search runs in a worker made from a blob: URL, which the policy refuses
// (and the few operations fit in the menu).
"use strict";

const root = document.getElementById("redoc");
Redoc.init("openapi.json", { nonce: root.dataset.styleNonce, disableSearch: true }, root);
