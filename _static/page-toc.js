// The list button at the top right of the article opens the "on this page" drawer. The theme
// hooks the drawer to the first such button of the page only, the one of its top bar, which
// this book does not show: pass the click on to it.
document.addEventListener("DOMContentLoaded", () => {
  const shown = document.querySelector(".bd-header-article .secondary-toggle");
  const hooked = document.querySelector(".secondary-toggle");
  if (shown && hooked && shown !== hooked) {
    shown.addEventListener("click", () => hooked.click());
  }
});
