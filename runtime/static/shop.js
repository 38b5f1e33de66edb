/* The demo shop's own page script (runtime/shop.py): the add-to-cart button, the cart page and the search page
 * report what the visitor does through the engine's tracker (window.ecrm, GET /tracker.js). */
function shopReady() {
  "use strict";
  var banner = document.getElementById("consent");
  if (banner && /(^|; )_ecrm_consent=/.test(document.cookie)) banner.hidden = true;
  var add = document.getElementById("add"), title = document.getElementById("title");
  var heading = document.getElementById("personal-heading");
  try { /* the shop's own memory of the last product seen, for the heading of the personal list */
    if (title && add) sessionStorage.setItem("shop_last_viewed", title.textContent);
    var last = sessionStorage.getItem("shop_last_viewed");
    if (heading && last) heading.textContent = "Because you viewed " + last;
  } catch (e) { /* private mode: the heading stays generic */ }
  if (add) {
    add.addEventListener("click", function () {
      ecrm.addToCart(add.dataset.item, 1, { price: +add.dataset.price, category: add.dataset.category });
      document.getElementById("added").hidden = false;
    });
  }
  var results = document.getElementById("results");
  if (results && results.dataset.query) ecrm.search(results.dataset.query);
  var lines = document.getElementById("lines"), ids = ecrm.cart();
  if (!lines || !ids.length) return;
  fetch("/items?ids=" + encodeURIComponent(ids.join(",")))
    .then(function (r) { return r.json(); })
    .then(function (items) {
      lines.textContent = "";
      items.forEach(function (it) {
        var li = document.createElement("li");
        li.textContent = it.title + " · €" + it.price.toFixed(2);
        li.setAttribute("data-id", it.item_id);
        lines.appendChild(li);
      });
      var buy = document.getElementById("buy");
      buy.hidden = false;
      buy.onclick = function () {
        var order = items.map(function (it) {
          return { item_id: it.item_id, quantity: 1, unit_price: it.price, category: it.category };
        });
        ecrm.purchase("o-" + Date.now(), order, "EUR");
        lines.textContent = "";
        buy.hidden = true;
        document.getElementById("bought").hidden = false;
      };
    });
}
/* Deferred after the tracker's tag, this runs once the tracker has (window.ecrm); ecrm:ready covers a later one. */
if (window.ecrm) shopReady(); else document.addEventListener("ecrm:ready", shopReady);
/* The consent banner of a shop whose tag says data-consent="required". */
document.addEventListener("click", function (e) {
  "use strict";
  var id = e.target && e.target.id;
  if ((id === "consent-accept" || id === "consent-refuse") && window.ecrm) {
    ecrm.consent(id === "consent-accept");
    document.getElementById("consent").hidden = true;
  }
});
