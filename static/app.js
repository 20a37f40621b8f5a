// Counts up the "Running for" time on pending cards, so the server is not asked to.
function updateElapsed() {
  for (const element of document.querySelectorAll("time.elapsed")) {
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(element.dateTime)) / 1000));
    element.textContent = seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  }
}

updateElapsed();
setInterval(updateElapsed, 1000);
