// Counts up the "Running for" time on pending cards, so the server is not asked to.
function updateElapsed() {
  for (const element of document.querySelectorAll("time.elapsed")) {
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(element.dateTime)) / 1000));
    element.textContent = seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  }
}

updateElapsed();
setInterval(updateElapsed, 1000);

// A card swapped in by a poll is rendered with "a moment". htmx 4.0.1 sends
// htmx:before:settle in the same task that inserts the new content, so the browser never
// paints that text. htmx:after:swap and htmx:after:process come after a settle delay.
document.addEventListener("htmx:before:settle", updateElapsed);

// Asks before sending a form that has a data-confirm message, such as a variation's Delete
// button. The capture phase runs this before any handler on the form itself. Without
// JavaScript the form is sent at once, and the server action works the same.
function confirmSubmit(event) {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
    event.stopPropagation();
  }
}

document.addEventListener("submit", confirmSubmit, true);
