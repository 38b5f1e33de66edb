/* ecrm tracker and recommendation widget (docs/tracker.md). No dependencies. A shop pastes one tag:
 *   <script src="https://<engine>/tracker.js" data-key="<collect key>" defer></script>
 * and the tracker sends to the origin it was loaded from. Options on the tag: data-consent="required" (send nothing
 * and set no cookie before ecrm.consent(true)), data-page-view="off" (no automatic page view), data-refresh-ms
 * (how long after a sent view, cart change or click the widgets are filled again; 0: never; default 400). */
(function (w, d) {
  "use strict";
  if (w.ecrm && w.ecrm.version) return;
  var tag = d.currentScript || d.querySelector("script[src*='tracker.js']");
  var opt = function (name, dflt) { var v = tag && tag.getAttribute("data-" + name); return v === null || v === undefined || v === "" ? dflt : v; };
  var api = new URL(tag ? tag.src : "/", location.href).origin;
  var key = opt("key", "");
  var ID = "_ecrm_id", SES = "_ecrm_s", OK = "_ecrm_consent", CART = "_ecrm_cart", PENDING = "_ecrm_pending", VIEWED = "_ecrm_viewed";
  var YEAR = 31536000, SESSION_S = 1800, BATCH = 20, QUEUE_MAX = 200, TIMEOUT_MS = 2500;
  var refreshMs = +opt("refresh-ms", 400);
  var queue = [], inflight = [], gone = false, timer = 0, retryTimer = 0, attempt = 0, sending = false, refreshTimer = 0;

  function cookie(name, value, maxAge) {
    if (value === undefined) {
      var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
      return m ? decodeURIComponent(m[1]) : "";
    }
    d.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax" +
      (location.protocol === "https:" ? "; Secure" : "");
  }
  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16); crypto.getRandomValues(b); b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  var consentNeeded = opt("consent", "") === "required";
  function allowed() { return !consentNeeded || cookie(OK) === "1"; }

  /* The visitor (a first-party cookie for a year) and the session (30 minutes after the last event). */
  function anonymousId() {
    if (!allowed()) return null;
    var id = cookie(ID) || uuid();
    cookie(ID, id, YEAR);
    return id;
  }
  function sessionId() {
    if (!allowed()) return null;
    var id = cookie(SES) || uuid();
    cookie(SES, id, SESSION_S);
    return id;
  }

  /* Sending: batches of at most 20 events; a failure (network, 429, 5xx) is retried with back-off (1 s doubling to
   * 60 s, with jitter); a refusal (4xx) is dropped; the queue keeps the newest 200 events. While the API fails, what
   * is not delivered is kept in localStorage and sent again from the next page (same event ids: counted once). */
  function save() {
    var all = queue.concat.apply(queue.slice(), inflight).slice(-QUEUE_MAX);
    try { if (all.length) localStorage.setItem(PENDING, JSON.stringify(all)); else localStorage.removeItem(PENDING); } catch (e) { /* private mode */ }
  }
  function restore() {
    var kept; try { kept = JSON.parse(localStorage.getItem(PENDING) || "[]"); } catch (e) { kept = []; }
    if (kept.length) { queue = kept.concat(queue).slice(-QUEUE_MAX); schedule(0); }
  }
  function done(batch) { inflight = inflight.filter(function (b) { return b !== batch; }); save(); }
  function track(type, fields) {
    if (!allowed()) return false;
    var ev = { type: type, event_id: uuid(), timestamp: Date.now(), anonymous_id: anonymousId(),
      session_id: sessionId(), url: String(location.href).slice(0, 4096) };
    for (var k in fields || {}) if (fields[k] !== undefined && fields[k] !== null) ev[k] = fields[k];
    queue.push(ev);
    if (queue.length > QUEUE_MAX) queue.splice(0, queue.length - QUEUE_MAX);
    if (attempt) save();
    if (/^(product_view|add_to_cart|remove_from_cart|purchase|recommendation_click)$/.test(type)) ev._r = 1;
    schedule(queue.length >= BATCH ? 0 : ev._r ? 100 : 300);  /* what changes the lists goes out sooner */
    return ev.event_id;
  }
  function schedule(ms) { if (!retryTimer) { clearTimeout(timer); timer = setTimeout(flush, ms); } }
  function headers() {
    var h = { "Content-Type": "application/json" };
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }
  function body(batch) {
    return JSON.stringify(batch.map(function (e) { var c = {}; for (var k in e) if (k !== "_r") c[k] = e[k]; return c; }));
  }
  function flush(leaving) {
    if (!queue.length || (sending && !leaving)) return;
    if (!w.fetch) return;  /* JSON with its content type, or nothing: the API refuses other bodies */
    var batch = queue.splice(0, BATCH);
    sending = true;
    if (!leaving || attempt) inflight.push(batch);  /* leaving with the API well: keepalive delivers it */
    save();
    fetch(api + "/v1/events", { method: "POST", headers: headers(), body: body(batch), keepalive: true,
      credentials: "omit", mode: "cors" })
      .then(function (r) {
        if (r.status === 429 || r.status >= 500) throw r;
        attempt = 0;
        done(batch);
        if (batch.some(function (e) { return e._r; })) refreshSoon();
      })
      .catch(function () {
        inflight = inflight.filter(function (b) { return b !== batch; });
        /* the page went away with the API answering: the browser's keepalive request goes on without the page */
        if (gone && !attempt) return save();
        queue = batch.concat(queue).slice(-QUEUE_MAX);
        save();
        var delay = Math.min(60000, 1000 * Math.pow(2, attempt++)) * (0.5 + Math.random() / 2);
        clearTimeout(timer); retryTimer = setTimeout(function () { retryTimer = 0; flush(); }, delay);
      })
      .then(function () { sending = false; if (queue.length && !retryTimer) schedule(0); });
    if (leaving) flush(leaving);
  }
  function leave() { if (d.visibilityState === "hidden") flush(true); }
  d.addEventListener("visibilitychange", leave);
  w.addEventListener("pagehide", function () { gone = true; flush(true); });
  w.addEventListener("pageshow", function () { gone = false; });

  /* The cart as this browser knows it (item ids), for the cart widget. */
  function cartItems() { try { return JSON.parse(localStorage.getItem(CART) || "[]"); } catch (e) { return []; } }
  function setCart(items) { try { localStorage.setItem(CART, JSON.stringify(items.slice(-100))); } catch (e) { /* private mode */ } }

  var ecrm = {
    version: "1",
    track: track,
    anonymousId: anonymousId,
    sessionId: sessionId,
    flush: function () { flush(); },
    consent: function (granted) {
      if (granted) {
        var first = cookie(OK) !== "1";
        cookie(OK, "1", YEAR);
        if (first) { start(); widgets(false); }
      } else {
        queue = []; inflight = []; save();
        try { localStorage.removeItem(CART); sessionStorage.removeItem(VIEWED); } catch (e) { /* private mode */ }
        cookie(OK, "0", YEAR); cookie(ID, "", 0); cookie(SES, "", 0);
      }
    },
    pageView: function (f) { return track("page_view", assign({ title: d.title.slice(0, 1024) || undefined, referrer: d.referrer || undefined }, f)); },
    productView: function (item, f) { return track("product_view", assign({ item_id: String(item) }, f)); },
    search: function (query, f) { return track("search", assign({ query: String(query) }, f)); },
    addToCart: function (item, quantity, f) {
      if (!allowed()) return false;
      var items = cartItems().filter(function (i) { return i !== String(item); }); items.push(String(item)); setCart(items);
      return track("add_to_cart", assign({ item_id: String(item), quantity: quantity || 1 }, f));
    },
    removeFromCart: function (item, quantity, f) {
      if (!quantity && allowed()) setCart(cartItems().filter(function (i) { return i !== String(item); }));
      return track("remove_from_cart", assign({ item_id: String(item), quantity: quantity || undefined }, f));
    },
    purchase: function (order, lines, currency, f) {
      if (allowed()) setCart([]);
      return track("purchase", assign({ order_id: String(order), lines: lines, currency: currency }, f));
    },
    cart: cartItems,
    refresh: function () { widgets(true); }
  };
  function assign(a, b) { for (var k in b || {}) a[k] = b[k]; return a; }

  /* Widgets: <div data-ecrm-widget="personal|similar|cart|session" data-item=... data-n=...>. Filled only when
   * the API answers in time with items: otherwise the element keeps the page's own content, and no error shows. */
  var observer = w.IntersectionObserver && new IntersectionObserver(function (entries) {
    entries.forEach(function (en) { if (en.isIntersecting) { observer.unobserve(en.target); shown(en.target); } });
  }, { threshold: 0.5 });
  function shown(el) {
    var rid = el.getAttribute("data-ecrm-recommendation-id");
    if (!rid || el._ecrmSeen === rid) return;
    el._ecrmSeen = rid;
    var ids = Array.prototype.map.call(el.querySelectorAll("[data-ecrm-item]"), function (c) { return c.getAttribute("data-ecrm-item"); });
    if (ids.length) track("recommendation_view", { recommendation_id: rid, item_ids: ids.slice(0, 100) });
  }
  function request(el) {
    var kind = el.getAttribute("data-ecrm-widget"), item = el.getAttribute("data-item") || "";
    var n = Math.max(1, Math.min(20, +(el.getAttribute("data-n") || 4) || 4)), q = "?attributes=true&n=" + n;
    var visitor = anonymousId();
    if (kind === "similar" && item) return [api + "/v1/items/" + encodeURIComponent(item) + "/similar" + q];
    if (kind === "cart" || kind === "session") {
      var items = kind === "cart" ? (item ? item.split(",") : cartItems()) : viewed();
      if (items.length) return [api + "/v1/recommendations/cart" + q, { item_ids: items.slice(-100), n: n }];
      if (kind === "cart") return null;
    }
    if ((kind === "personal" || kind === "session") && visitor) return [api + "/v1/sessions/" + encodeURIComponent(visitor) + "/recommendations" + q];
    return null;
  }
  function viewed() { try { return JSON.parse(sessionStorage.getItem(VIEWED) || "[]"); } catch (e) { return []; } }
  function remember(item) {
    var v = viewed().filter(function (i) { return i !== item; }); v.push(item);
    try { sessionStorage.setItem(VIEWED, JSON.stringify(v.slice(-20))); } catch (e) { /* private mode */ }
  }
  function safeUrl(u) {
    try { return typeof u === "string" && u && /^https?:$/.test(new URL(u, location.href).protocol) ? u : ""; } catch (e) { return ""; }
  }
  function fill(el, data) {
    if (!data || !data.items || !data.items.length) return;
    var target = el.querySelector("[data-ecrm-cards]") || el, link = el.getAttribute("data-link") || "";
    var currency = el.getAttribute("data-currency") || "EUR", frag = d.createDocumentFragment();
    data.items.forEach(function (it) {
      var a = d.createElement("a"), href = safeUrl(it.attributes && it.attributes.url) || link.replace("{item_id}", encodeURIComponent(it.item_id));
      a.className = "ecrm-card"; a.setAttribute("data-ecrm-item", it.item_id); a.href = href || "#";
      var img = safeUrl(it.image_url);
      if (img) { var i = d.createElement("img"); i.src = img; i.alt = ""; i.loading = "lazy"; a.appendChild(i); }
      part(a, "ecrm-title", it.title || it.item_id);
      if (typeof it.price === "number") {
        var p; try { p = new Intl.NumberFormat(d.documentElement.lang || undefined, { style: "currency", currency: currency }).format(it.price); } catch (e) { p = it.price.toFixed(2); }
        part(a, "ecrm-price", p);
      }
      part(a, "ecrm-reason", it.reason || "");
      a.addEventListener("click", function () {
        track("recommendation_click", { recommendation_id: data.recommendation_id, item_id: it.item_id });
        flush(true);
      });
      frag.appendChild(a);
    });
    target.textContent = "";
    target.appendChild(frag);
    el.setAttribute("data-ecrm-recommendation-id", data.recommendation_id);
    el.setAttribute("data-ecrm-strategy", data.strategy || "");
    if (observer) observer.observe(el); else shown(el);
  }
  function part(parent, cls, text) { var s = d.createElement("span"); s.className = cls; s.textContent = text; parent.appendChild(s); }
  function load(el) {
    var req = request(el);
    if (!req) return;
    var ctrl = w.AbortController ? new AbortController() : null;
    var t = setTimeout(function () { if (ctrl) ctrl.abort(); }, +(el.getAttribute("data-timeout-ms") || TIMEOUT_MS));
    var init = { headers: headers(), credentials: "omit", mode: "cors", signal: ctrl ? ctrl.signal : undefined };
    if (req[1]) { init.method = "POST"; init.body = JSON.stringify(req[1]); }
    fetch(req[0], init).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { fill(el, data); }, function () { /* slow or down: keep the page's content */ })
      .then(function () { clearTimeout(t); });
  }
  function widgets(live) {
    var els = d.querySelectorAll("[data-ecrm-widget]");
    for (var i = 0; i < els.length; i++) if (!live || els[i].getAttribute("data-ecrm-widget") !== "similar") load(els[i]);
  }
  function refreshSoon() { if (refreshMs > 0) { clearTimeout(refreshTimer); refreshTimer = setTimeout(function () { widgets(true); }, refreshMs); } }

  /* On load: a page view, a product view for each element marked data-ecrm-product, the widgets. */
  var started = false;
  function start() {
    if (started || !allowed()) return;
    started = true;
    restore();
    if (opt("page-view", "on") !== "off") ecrm.pageView();
    var seen = {};
    Array.prototype.forEach.call(d.querySelectorAll("[data-ecrm-product]"), function (el) {
      var id = el.getAttribute("data-ecrm-product"), price = parseFloat(el.getAttribute("data-ecrm-price") || "");
      if (!id || seen[id]) return;
      seen[id] = 1; remember(id);
      ecrm.productView(id, { category: el.getAttribute("data-ecrm-category") || undefined, price: isNaN(price) ? undefined : price });
    });
  }
  w.ecrm = ecrm;
  function ready() { start(); widgets(false); d.dispatchEvent(new Event("ecrm:ready")); }
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", ready); else ready();
})(window, document);
