// The app's few browser-side helpers (Gradio runs this once when the page loads).
() => {
  const find = (selector) => document.querySelector(selector);
  window.horror = {
    // Before a story is told: bring the story into view where it is off-screen (on a phone it
    // sits below the controls), then pass the event's inputs through unchanged.
    showStory(inputs) {
      const story = find("#story-view");
      if (story) {
        const box = story.getBoundingClientRect();
        if (box.top < 0 || box.top > window.innerHeight * 0.6) {
          story.scrollIntoView({ behavior: "smooth", block: "start" });
        }
      }
      return inputs;
    },
    // A random prompt is on its way: Generate waits for it (the server re-enables it).
    holdGenerate() {
      for (const id of ["#generate", "#again"]) {
        const button = find(id);
        if (button) button.disabled = true;
      }
      return [];
    },
    // The full address of a shared story, from the query the server wrote.
    shareLink(query) {
      return query ? `${window.location.origin}${window.location.pathname}?${query}` : "";
    },
    copy(text) {
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
      return [];
    },
    // The chain's file is written: start its download.
    startDownload() {
      const link = find("#chain-download a, #chain-download button, a#chain-download, button#chain-download");
      if (link) link.click();
      return [];
    },
    // "123 / 1,000" under each text box with the classes "counted max-N", red past N, so text
    // over the limit is seen before the server refuses it (nothing is cut silently).
    countCharacters() {
      for (const box of document.querySelectorAll(".counted:not([data-counted])")) {
        const input = box.querySelector("textarea, input");
        const max = Number(([...box.classList].find((name) => name.startsWith("max-")) || "max-0").slice(4));
        if (!input || !max) continue;
        box.dataset.counted = "1";
        const counter = document.createElement("div");
        counter.className = "counter";
        input.insertAdjacentElement("afterend", counter);
        const update = () => {
          counter.textContent = `${input.value.length.toLocaleString("en")} / ${max.toLocaleString("en")}`;
          counter.classList.toggle("over", input.value.length > max);
        };
        input.addEventListener("input", update);
        setInterval(update, 700); // the app also fills boxes itself (random prompt, shared link)
        update();
      }
    },
  };
  new MutationObserver(() => window.horror.countCharacters()).observe(document.body, { childList: true, subtree: true });
}
