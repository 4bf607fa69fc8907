// One colour per source, the same on the stage and in the mix panel. Orange is yours alone.

export const ME_COLOUR = "#ffb347";

/** Hues for other sources: blues, greens, violets, pinks. */
const SOURCE_HUES = [205, 160, 265, 330, 110, 185, 235, 300];

/** A stable colour for a source id. */
export function sourceColour(id, alpha = 1) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsla(${SOURCE_HUES[h % SOURCE_HUES.length]}, 70%, 64%, ${alpha})`;
}
