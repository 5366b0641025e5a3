// The certificate page's print button (issue 15); an external script, as the CSP allows no inline one.
document.querySelectorAll("[data-print]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () { window.print(); });
});
