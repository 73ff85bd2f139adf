// The component's entry module: the project's decoder (the default export of
// plugin.js) behind the WIT world's `decoder` interface.
import Plugin from '../plugin.js';
import { exportsFor } from './component.js';

export const decoder = exportsFor(Plugin);
