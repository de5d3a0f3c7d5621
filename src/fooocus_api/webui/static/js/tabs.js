// Accessible tabs: role=tab buttons in a role=tablist; arrows, Home and End move between them.

function tabsOf(list) {
  return [...list.querySelectorAll('[role="tab"]')].filter((tab) => !tab.hidden);
}

/** Show `tab`'s panel, hide its siblings' panels. */
export function selectTab(tab, { focus = false } = {}) {
  const list = tab.closest('[role="tablist"]');
  for (const other of list.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute('aria-selected', String(selected));
    other.tabIndex = selected ? 0 : -1;
    const panel = document.getElementById(other.getAttribute('aria-controls'));
    if (panel) panel.hidden = !selected;
  }
  if (focus) tab.focus();
  list.dispatchEvent(new CustomEvent('tabchange', { detail: { tab } }));
}

export function setupTabs(list) {
  list.addEventListener('click', (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab && list.contains(tab)) selectTab(tab);
  });
  list.addEventListener('keydown', (event) => {
    const tabs = tabsOf(list);
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (event.key === 'ArrowRight' || event.key === 'ArrowDown') next = tabs[(index + 1) % tabs.length];
    else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') {
      next = tabs[(index - 1 + tabs.length) % tabs.length];
    } else if (event.key === 'Home') next = tabs[0];
    else if (event.key === 'End') next = tabs[tabs.length - 1];
    if (next) {
      event.preventDefault();
      selectTab(next, { focus: true });
    }
  });
}

/** Select the tab whose panel contains `element` (to reveal a field with an error). */
export function revealPanelOf(element) {
  let panel = element.closest('[role="tabpanel"]');
  while (panel) {
    const tab = document.querySelector(`[role="tab"][aria-controls="${panel.id}"]`);
    if (tab && tab.getAttribute('aria-selected') !== 'true') selectTab(tab);
    panel = panel.parentElement?.closest('[role="tabpanel"]') || null;
  }
  const details = element.closest('details');
  if (details) details.open = true;
}
