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
        const max = Number(([...box.classList].find((name) => name.startsWith("max-")) || "max-0").slice(4));
        if (!max || !box.querySelector("textarea, input")) continue;
        box.dataset.counted = "1";
        const counter = document.createElement("div");
        counter.className = "counter";
        box.appendChild(counter);
        // The box's text field is looked up each time: Gradio may replace it when it sets the value.
        const update = () => {
          const length = (box.querySelector("textarea, input")?.value || "").length;
          counter.textContent = `${length.toLocaleString("en")} / ${max.toLocaleString("en")}`;
          counter.classList.toggle("over", length > max);
        };
        box.addEventListener("input", update);
        setInterval(update, 250); // the app also fills boxes itself (random prompt, shared link, a turn)
        update();
      }
    },
  };
  // An example first sentence: put it in the box and tell it, with the settings as they are.
  document.addEventListener("click", (event) => {
    const example = event.target.closest(".example-prompt");
    const box = find("#prompt textarea, #prompt input");
    if (!example || !box) return;
    box.value = example.textContent;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => find("#generate")?.click(), 50);
  });
  new MutationObserver(() => window.horror.countCharacters()).observe(document.body, { childList: true, subtree: true });
}
