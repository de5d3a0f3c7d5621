// Image-input tabs (upscale/vary, inpaint/outpaint with a mask drawn on a canvas, image
// prompts). Each tab is shown only when GET /v1/engines/features reports its mode available.

import { $, h } from './dom.js';
import { idFor } from './fields.js';

const UOV_FIELDS = [
  { name: 'upscale_multiple', label: 'Upscale factor (Custom)', kind: 'slider', min: 1, max: 5, step: 0.05 },
  { name: 'overwrite_vary_strength', label: 'Vary strength (−1 = default)', kind: 'number', min: -1, max: 1, step: 0.01 },
  { name: 'overwrite_upscale_strength', label: 'Upscale strength (−1 = default)', kind: 'number', min: -1, max: 1, step: 0.01 },
  { name: 'mixing_image_prompt_and_vary_upscale', label: 'Mix with image prompts', kind: 'checkbox' },
];

const INPAINT_FIELDS = [
  { name: 'inpaint_additional_prompt', label: 'Inpaint prompt', kind: 'text', placeholder: 'What goes into the masked area' },
  { name: 'inpaint_engine', label: 'Inpaint engine', kind: 'select', options: ['None', 'v1', 'v2.5', 'v2.6'] },
  { name: 'inpaint_strength', label: 'Denoising strength', kind: 'slider', min: 0, max: 1, step: 0.01 },
  { name: 'inpaint_respective_field', label: 'Respective field', kind: 'slider', min: 0, max: 1, step: 0.01 },
  { name: 'inpaint_erode_or_dilate', label: 'Mask erode (−) or dilate (+)', kind: 'slider', min: -64, max: 64, step: 1, int: true },
  { name: 'invert_mask_checkbox', label: 'Invert mask', kind: 'checkbox' },
  { name: 'inpaint_disable_initial_latent', label: 'Disable initial latent', kind: 'checkbox' },
  { name: 'mixing_image_prompt_and_inpaint', label: 'Mix with image prompts', kind: 'checkbox' },
];

const IP_FIELDS = [
  { name: 'canny_low_threshold', label: 'Canny low threshold', kind: 'slider', min: 1, max: 255, step: 1, int: true },
  { name: 'canny_high_threshold', label: 'Canny high threshold', kind: 'slider', min: 1, max: 255, step: 1, int: true },
  { name: 'controlnet_softness', label: 'Softness of ControlNet', kind: 'slider', min: 0, max: 1, step: 0.01 },
  { name: 'skipping_cn_preprocessor', label: 'Skip preprocessors', kind: 'checkbox' },
];

const CN_TYPES = ['ImagePrompt', 'PyraCanny', 'CPDS', 'FaceSwap'];

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** A file input that keeps the chosen image as a data URL and shows it. */
function imagePicker(name, label) {
  const id = idFor(name);
  const input = h('input', { type: 'file', id, accept: 'image/*', 'aria-describedby': `${id}-error` });
  const preview = h('img', { class: 'input-preview', alt: '', hidden: true });
  const clear = h('button', { type: 'button', class: 'btn ghost small', text: 'Remove', hidden: true });
  const picker = { value: null, input, preview, onchange: null };
  input.addEventListener('change', async () => {
    const file = input.files?.[0];
    picker.value = file ? await readFile(file) : null;
    preview.src = picker.value || '';
    preview.hidden = !picker.value;
    clear.hidden = !picker.value;
    picker.onchange?.(picker.value);
  });
  clear.addEventListener('click', () => {
    input.value = '';
    picker.value = null;
    preview.hidden = true;
    clear.hidden = true;
    picker.onchange?.(null);
  });
  picker.element = h('div', { class: 'field', dataset: { field: name } },
    h('label', { for: id, text: label }), input, h('div', { class: 'input-preview-wrap' }, preview), clear,
    h('p', { class: 'field-error', id: `${id}-error` }));
  return picker;
}

/** A canvas over the inpaint image: draw the area to repaint (white on black when sent). */
class MaskCanvas {
  constructor() {
    this.canvas = h('canvas', { class: 'mask-canvas', 'aria-label': 'Mask: draw over the area to repaint' });
    this.image = h('img', { class: 'mask-image', alt: 'Image to inpaint' });
    this.brush = h('input', { type: 'range', min: 4, max: 200, value: 40, id: 'mask-brush' });
    this.drawn = false;
    this.element = h('div', { class: 'mask-editor', hidden: true },
      h('div', { class: 'mask-stack' }, this.image, this.canvas),
      h('div', { class: 'mask-tools' },
        h('label', { for: 'mask-brush', text: 'Brush' }), this.brush,
        h('button', { type: 'button', class: 'btn ghost small', text: 'Clear mask', onclick: () => this.clear() })));
    let drawing = false;
    const point = (event) => {
      const rect = this.canvas.getBoundingClientRect();
      return [(event.clientX - rect.left) * (this.canvas.width / rect.width),
        (event.clientY - rect.top) * (this.canvas.height / rect.height)];
    };
    this.canvas.addEventListener('pointerdown', (event) => {
      drawing = true;
      this.canvas.setPointerCapture(event.pointerId);
      this.stroke(...point(event), true);
    });
    this.canvas.addEventListener('pointermove', (event) => { if (drawing) this.stroke(...point(event), false); });
    const end = () => { drawing = false; };
    this.canvas.addEventListener('pointerup', end);
    this.canvas.addEventListener('pointercancel', end);
  }

  load(dataUrl) {
    this.element.hidden = !dataUrl;
    if (!dataUrl) return;
    this.image.onload = () => {
      this.canvas.width = this.image.naturalWidth;
      this.canvas.height = this.image.naturalHeight;
      this.clear();
    };
    this.image.src = dataUrl;
  }

  stroke(x, y, start) {
    const ctx = this.canvas.getContext('2d');
    const scale = this.canvas.width / (this.canvas.getBoundingClientRect().width || 1);
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.strokeStyle = 'rgba(255,255,255,0.85)';
    ctx.lineWidth = Number(this.brush.value) * scale;
    if (start) {
      ctx.beginPath();
      ctx.moveTo(x, y);
    }
    ctx.lineTo(x, y);
    ctx.stroke();
    this.drawn = true;
  }

  clear() {
    this.canvas.getContext('2d').clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.drawn = false;
  }

  /** The mask as a PNG data URL: white where drawn, black elsewhere. */
  mask() {
    if (!this.drawn) return null;
    const out = h('canvas');
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const ctx = out.getContext('2d');
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(this.canvas, 0, 0);
    const pixels = ctx.getImageData(0, 0, out.width, out.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const on = pixels.data[i] > 16;
      pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = on ? 255 : 0;
      pixels.data[i + 3] = 255;
    }
    ctx.putImageData(pixels, 0, 0);
    return out.toDataURL('image/png');
  }
}

/**
 * Build the image-input tabs into `form` (a GenerationForm) and show those the server
 * supports. Adds their fields to the request only when the tab has an image.
 */
export function setupImageInputs(form, features) {
  const available = features.image_inputs || {};
  const register = (container, specs) => {
    for (const spec of specs) {
      const field = form.widget({ ...spec, imageInput: true });
      form.fields.set(spec.name, field);
      container.append(field.element);
      if (spec.name in form.defaults) field.set(form.defaults[spec.name]);
    }
  };
  const extras = [];

  // Upscale or vary
  const uovPanel = $('#ppanel-uov');
  const uovImage = imagePicker('uov_input_image', 'Image');
  const methods = form.widget({ name: 'uov_method', label: 'Method', kind: 'radio', imageInput: true });
  methods.options((features.uov_methods || []).filter((m) => m !== 'Disabled'));
  methods.set('Vary (Subtle)');
  form.fields.set('uov_method', methods);
  uovPanel.append(uovImage.element, methods.element);
  register(uovPanel, UOV_FIELDS);
  extras.push(() => {
    if (!available.upscale_vary || !uovImage.value) return {};
    const out = { uov_input_image: uovImage.value, uov_method: methods.get() || 'Vary (Subtle)' };
    for (const spec of UOV_FIELDS) out[spec.name] = form.fields.get(spec.name).get();
    return out;
  });

  // Inpaint or outpaint
  const inpaintPanel = $('#ppanel-inpaint');
  const inpaintImage = imagePicker('inpaint_input_image', 'Image');
  const maskUpload = imagePicker('inpaint_mask_image_upload', 'Or upload a mask (white = repaint)');
  const canvas = new MaskCanvas();
  inpaintImage.onchange = (value) => canvas.load(value);
  const sides = ['Left', 'Right', 'Top', 'Bottom'].map((side) => h('input', { type: 'checkbox', value: side, id: `outpaint-${side}` }));
  const outpaint = h('fieldset', { class: 'field', dataset: { field: 'outpaint_selections' } },
    h('legend', { text: 'Outpaint direction' }),
    h('div', { class: 'check-row' }, sides.map((box) => h('label', { class: 'check inline', for: box.id }, box, h('span', { text: box.value })))),
    h('p', { class: 'field-error', id: `${idFor('outpaint_selections')}-error` }));
  inpaintPanel.append(inpaintImage.element, canvas.element, maskUpload.element, outpaint);
  register(inpaintPanel, INPAINT_FIELDS);
  extras.push(() => {
    if (!available.inpaint_outpaint || !inpaintImage.value) return {};
    const mask = maskUpload.value || canvas.mask();
    const out = {
      inpaint_input_image: inpaintImage.value,
      outpaint_selections: sides.filter((b) => b.checked).map((b) => b.value),
    };
    if (mask) {
      out.inpaint_mask_image_upload = mask;
      out.inpaint_advanced_masking_checkbox = true;
    }
    for (const spec of INPAINT_FIELDS) out[spec.name] = form.fields.get(spec.name).get();
    return out;
  });

  // Image prompts: four slots
  const ipPanel = $('#ppanel-ip');
  const slots = [];
  for (let i = 0; i < 4; i += 1) {
    const base = `controlnet_image[${i}]`;
    const picker = imagePicker(`${base}.cn_img`, `Image ${i + 1}`);
    const type = h('select', { id: idFor(`${base}.cn_type`), 'aria-label': `Image ${i + 1} type` },
      CN_TYPES.map((t) => h('option', { value: t, text: t })));
    const stop = h('input', { type: 'number', id: idFor(`${base}.cn_stop`), min: 0, max: 1, step: 0.01, value: 0.6, class: 'num', 'aria-label': `Image ${i + 1} stop at` });
    const weight = h('input', { type: 'number', id: idFor(`${base}.cn_weight`), min: 0, max: 2, step: 0.01, value: 0.6, class: 'num', 'aria-label': `Image ${i + 1} weight` });
    ipPanel.append(h('fieldset', { class: 'field ip-slot', dataset: { field: base } },
      h('legend', { text: `Image prompt ${i + 1}` }), picker.element,
      h('div', { class: 'ip-controls' }, type,
        h('label', { for: stop.id, text: 'Stop at' }), stop,
        h('label', { for: weight.id, text: 'Weight' }), weight),
      h('p', { class: 'field-error', id: `${idFor(base)}-error` })));
    slots.push({ picker, type, stop, weight });
  }
  register(ipPanel, IP_FIELDS);
  extras.push(() => {
    if (!available.image_prompt) return {};
    const used = slots.filter((s) => s.picker.value);
    if (!used.length) return {};
    const out = {
      controlnet_image: used.map((s) => ({
        cn_img: s.picker.value, cn_type: s.type.value, cn_stop: Number(s.stop.value), cn_weight: Number(s.weight.value),
      })),
    };
    for (const spec of IP_FIELDS) out[spec.name] = form.fields.get(spec.name).get();
    return out;
  });

  form.extras = extras;
  for (const tab of document.querySelectorAll('#panel-tabs [data-feature]')) {
    tab.hidden = !available[tab.dataset.feature];
  }
}
