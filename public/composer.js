// GPT Workbench: one fix to Chainlit's message composer, loaded through custom_js in
// .chainlit/config.toml.
//
// Typing "/train" and pressing Enter: Chainlit's command menu is open, so that Enter only turns
// the text into a command chip, and a second Enter sends it. People expect the first Enter to run
// the command, as it does in a terminal. When Enter picks a command from the open menu, send it
// once the chip is in place (the send button is enabled by the chip alone). "/train preset=..."
// with options has a space, so the menu is closed and Enter already sends the text as typed.
document.addEventListener("keydown", (event) => {
  const box = event.target;
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  if (!box || box.id !== "chat-input") return;
  if (!/^\/\S+$/.test((box.value || "").trim())) return;  // a bare "/command" only
  if (!document.querySelector(".command-item")) return;  // the command menu is open
  setTimeout(() => {
    const send = document.getElementById("chat-submit");
    if (send && !send.disabled) send.click();
  }, 60);
}, true);
