" collab/language.vim: the host's language server in Vim, through collab-ls.
"
" collab-ls answers the usual LSP requests itself: a host's with the real
" server it runs (`--share -- pylsp`), a guest's by asking the host's server
" over the relay. This file asks them and shows the answers: hover in a popup,
" definition and references as jumps and quickfix lists, diagnostics as signs,
" underlines and a location list, completion as 'omnifunc', rename and
" formatting. The connection, positions and edit application are collab.vim's
" (collab#request(), collab#doc_position(), collab#apply_workspace_edit()...).
"
" A guest's rename and formatting come back as an empty edit: the host applies
" the real one to the shared documents and it reaches this Vim as a peer edit
" (workspace/applyEdit). A host gets the server's edit and applies it here.
" Answers are checked against the buffer they were asked for: a buffer that
" has gone is ignored, an edit for a buffer changed meanwhile is not applied.

" full path -> the diagnostics last published for it (none: no key)
let s:diagnostics = {}
" what -> the last answer shown, for scripts and tests (collab#language#last())
let s:last = {}
let s:complete_at = {}
let s:defined = 0

const s:SEVERITY = {1: 'Error', 2: 'Warning', 3: 'Info', 4: 'Hint'}
const s:QF_TYPE = {1: 'E', 2: 'W', 3: 'I', 4: 'N'}
const s:SIGN_GROUP = 'collab_diagnostics'
" CompletionItemKind -> a letter for the popup menu
const s:KIND = {1: 't', 2: 'f', 3: 'f', 4: 'f', 5: 'm', 6: 'v', 7: 't', 8: 't', 9: 'M',
      \ 10: 'm', 11: 'u', 12: 'v', 13: 't', 14: 'k', 15: 's', 16: 'c', 17: 'F', 18: 'r',
      \ 19: 'd', 20: 'm', 21: 'c', 22: 't', 23: 'e', 24: 'o', 25: 'T'}

" ------------------------------------------------------------------ helpers

function! s:norm(path) abort
  return resolve(fnamemodify(a:path, ':p'))
endfunction

" The loaded buffer of a path, or -1.
function! s:loaded_buf(path) abort
  let want = s:norm(a:path)
  for info in getbufinfo({'bufloaded': 1})
    if info.name !=# '' && s:norm(info.name) ==# want
      return info.bufnr
    endif
  endfor
  return -1
endfunction

" The lines of a file: its buffer's if loaded, else from disk (empty if unreadable).
function! s:file_lines(path) abort
  let buf = s:loaded_buf(a:path)
  if buf > 0
    return getbufline(buf, 1, '$')
  endif
  return filereadable(a:path) ? readfile(a:path) : []
endfunction

" 1-based [lnum, col] of an LSP position in `lines` (clamped to the text).
function! s:lnum_col(lines, pos) abort
  if empty(a:lines)
    return [a:pos.line + 1, 1]
  endif
  let l = max([0, min([a:pos.line, len(a:lines) - 1])])
  return [l + 1, collab#byte_col(a:lines[l], a:pos.character) + 1]
endfunction

function! s:error(msg) abort
  call collab#say(a:msg, 'error')
endfunction

" The current buffer's document and the cursor's position in it, or {} (said why).
function! s:here(what, with_position) abort
  if !collab#ready()
    call collab#say(printf('collab: %s: not running (:CollabShare or :CollabJoin {url})', a:what), 'warn')
    return {}
  endif
  let buf = bufnr('%')
  let params = collab#doc_position(buf, line('.'), col('.'))
  if empty(params)
    call collab#say(printf('collab: %s: this buffer is not shared (not under %s)',
          \ a:what, collab#info().root), 'warn')
    return {}
  endif
  if !a:with_position
    call remove(params, 'position')
  endif
  return {'buf': buf, 'params': params, 'tick': getbufvar(buf, 'changedtick')}
endfunction

" Sends a request; `Handler(result, buf)` gets the result of a success.
function! s:ask(method, req, what, Handler) abort
  let Callback = function('s:answer', [a:what, a:Handler, a:req.buf])
  if !collab#request(a:method, a:req.params, Callback)
    call collab#say(printf('collab: %s: collab-ls is not running', a:what), 'warn')
  endif
endfunction

function! s:answer(what, Handler, buf, ch, resp) abort
  try
    if type(a:resp) != v:t_dict
      return
    endif
    if has_key(a:resp, 'error')
      let err = a:resp.error
      let msg = type(err) == v:t_dict ? get(err, 'message', string(err)) : string(err)
      call s:error(printf('collab: %s failed: %s', a:what, msg))
      return
    endif
    if !bufexists(a:buf) || !bufloaded(a:buf)
      " The buffer has gone.
      return
    endif
    call a:Handler(get(a:resp, 'result', v:null), a:buf)
  catch
    call s:error(printf('collab: %s: %s', a:what, v:exception))
  endtry
endfunction

" Opens the quickfix (or location) window without leaving the current window.
function! s:show_list(loclist) abort
  let win = win_getid()
  execute a:loclist ? 'lopen' : 'botright copen'
  call win_gotoid(win)
endfunction

" ------------------------------------------------------------------- hover

function! collab#language#hover() abort
  let req = s:here('hover', 1)
  if !empty(req)
    call s:ask('textDocument/hover', req, 'hover', function('s:on_hover'))
  endif
endfunction

function! s:on_hover(result, buf) abort
  let contents = type(a:result) == v:t_dict ? get(a:result, 'contents', '') : ''
  let lines = s:trim_blank(s:markup_lines(contents))
  let s:last.hover = join(lines, "\n")
  if empty(lines)
    call collab#say('collab: no hover information here')
    return
  endif
  if bufnr('%') != a:buf
    " The user moved on.
    return
  endif
  if has('popupwin')
    call popup_atcursor(lines, {'padding': [0, 1, 0, 1], 'border': [],
          \ 'maxwidth': max([20, min([100, &columns - 6])]), 'maxheight': max([3, &lines / 2]),
          \ 'moved': 'any', 'close': 'click'})
  else
    echo join(lines, "\n")
  endif
endfunction

" MarkupContent, MarkedString or MarkedString[] as display lines.
function! s:markup_lines(c) abort
  if type(a:c) == v:t_string
    return s:markdown_lines(a:c)
  elseif type(a:c) == v:t_list
    let out = []
    for part in a:c
      let lines = s:trim_blank(s:markup_lines(part))
      if !empty(lines)
        let out += (empty(out) ? [] : ['']) + lines
      endif
    endfor
    return out
  elseif type(a:c) == v:t_dict
    let value = get(a:c, 'value', '')
    let value = type(value) == v:t_string ? value : string(value)
    if has_key(a:c, 'language') || get(a:c, 'kind', '') ==# 'plaintext'
      return split(value, "\r\\=\n", 1)
    endif
    return s:markdown_lines(value)
  endif
  return []
endfunction

" Markdown, readably: code fences dropped, backslash escapes undone.
function! s:markdown_lines(text) abort
  let out = []
  let in_code = 0
  for line in split(a:text, "\r\\=\n", 1)
    if line =~# '^\s*```'
      let in_code = !in_code
      continue
    endif
    if !in_code
      let line = substitute(line, '\\\([\\`*_{}\[\]()#+.!|<>-]\)', '\1', 'g')
    endif
    call add(out, line)
  endfor
  return out
endfunction

function! s:trim_blank(lines) abort
  let lines = copy(a:lines)
  while !empty(lines) && lines[0] =~# '^\s*$'
    call remove(lines, 0)
  endwhile
  while !empty(lines) && lines[-1] =~# '^\s*$'
    call remove(lines, -1)
  endwhile
  return lines
endfunction

" ------------------------------------------------- definition, references

function! collab#language#definition() abort
  let req = s:here('definition', 1)
  if !empty(req)
    call s:ask('textDocument/definition', req, 'definition', function('s:on_definition'))
  endif
endfunction

function! collab#language#references() abort
  let req = s:here('references', 1)
  if !empty(req)
    let req.params.context = {'includeDeclaration': v:true}
    call s:ask('textDocument/references', req, 'references', function('s:on_references'))
  endif
endfunction

" Location, Location[] or LocationLink[] as [{path, range}].
function! s:locations(result) abort
  let found = type(a:result) == v:t_dict ? [a:result] : type(a:result) == v:t_list ? a:result : []
  let out = []
  for loc in found
    if type(loc) != v:t_dict
      continue
    endif
    if has_key(loc, 'targetUri')
      let range = get(loc, 'targetSelectionRange', get(loc, 'targetRange', {}))
      let uri = loc.targetUri
    else
      let range = get(loc, 'range', {})
      let uri = get(loc, 'uri', '')
    endif
    if type(uri) == v:t_string && uri =~# '^file:' && has_key(range, 'start')
      call add(out, {'path': collab#path_from_uri(uri), 'range': range})
    endif
  endfor
  return out
endfunction

" Quickfix items for locations, each with the text of its line.
function! s:qf_items(locs) abort
  let cache = {}
  let items = []
  for loc in a:locs
    if !has_key(cache, loc.path)
      let cache[loc.path] = s:file_lines(loc.path)
    endif
    let lines = cache[loc.path]
    let [lnum, col] = s:lnum_col(lines, loc.range.start)
    call add(items, {'filename': loc.path, 'lnum': lnum, 'col': col,
          \ 'text': trim(get(lines, lnum - 1, ''))})
  endfor
  return items
endfunction

function! s:on_definition(result, buf) abort
  let locs = s:locations(a:result)
  let s:last.definition = s:qf_items(locs)
  if empty(locs)
    call collab#say('collab: no definition found')
  elseif bufnr('%') != a:buf
    " The user moved on.
    return
  elseif len(locs) == 1
    call s:jump(locs[0])
  else
    call setqflist([], ' ', {'title': 'collab: definitions', 'items': s:last.definition})
    call s:show_list(0)
    call s:jump(locs[0])
  endif
endfunction

" Jumps to a location (the previous one goes on the jump list).
function! s:jump(loc) abort
  normal! m'
  if s:norm(expand('%:p')) !=# s:norm(a:loc.path)
    let buf = s:loaded_buf(a:loc.path)
    if buf > 0
      execute 'hide buffer' buf
    else
      execute 'hide edit' fnameescape(a:loc.path)
    endif
  endif
  let [lnum, col] = s:lnum_col(getline(1, '$'), a:loc.range.start)
  call cursor(lnum, col)
  normal! zv
endfunction

function! s:on_references(result, buf) abort
  let items = s:qf_items(s:locations(a:result))
  let s:last.references = items
  if empty(items)
    call collab#say('collab: no references found')
    return
  endif
  call setqflist([], ' ', {'title': 'collab: references', 'items': items})
  call s:show_list(0)
  call collab#say(printf('collab: %d reference%s (:cnext, :cprev)', len(items), len(items) == 1 ? '' : 's'))
endfunction

" ------------------------------------------------------------- diagnostics

function! s:define() abort
  if s:defined
    return
  endif
  let s:defined = 1
  let colours = {'Error': 'Red', 'Warning': 'Yellow', 'Info': 'Blue', 'Hint': 'Grey'}
  let links = {'Error': 'ErrorMsg', 'Warning': 'WarningMsg', 'Info': 'Identifier', 'Hint': 'Comment'}
  for name in values(s:SEVERITY)
    let group = 'CollabDiagnostic' . name
    execute printf('highlight default link %s %s', group, links[name])
    execute printf('highlight default %sRange term=underline cterm=underline gui=undercurl guisp=%s',
          \ group, colours[name])
    call sign_define(group, {'text': name[0] . '>', 'texthl': group})
    if empty(prop_type_get(group))
      call prop_type_add(group, {'highlight': group . 'Range', 'priority': 10})
    endif
  endfor
endfunction

function! s:severity(d) abort
  let s = get(a:d, 'severity', 1)
  return has_key(s:SEVERITY, s) ? s : 1
endfunction

" textDocument/publishDiagnostics: stored by file, shown in its buffer if loaded.
function! collab#language#on_diagnostics(params) abort
  let uri = get(a:params, 'uri', '')
  let list = get(a:params, 'diagnostics', [])
  if type(uri) != v:t_string || uri !~# '^file:' || type(list) != v:t_list
    return
  endif
  let path = s:norm(collab#path_from_uri(uri))
  if empty(list)
    silent! call remove(s:diagnostics, path)
  else
    let s:diagnostics[path] = list
  endif
  let buf = s:loaded_buf(path)
  if buf > 0
    call s:render(buf)
  endif
endfunction

" Signs and underlines of a buffer's diagnostics (replacing the previous ones).
function! s:render(buf) abort
  call s:define()
  call s:unrender(a:buf)
  let lines = getbufline(a:buf, 1, '$')
  let signs = []
  for d in get(s:diagnostics, s:norm(bufname(a:buf)), [])
    let range = get(d, 'range', {})
    if !has_key(range, 'start') || !has_key(range, 'end')
      continue
    endif
    let sev = s:severity(d)
    let type = 'CollabDiagnostic' . s:SEVERITY[sev]
    let [l1, c1] = s:lnum_col(lines, range.start)
    let [l2, c2] = s:lnum_col(lines, range.end)
    " Worse first: a line's sign is the most severe of its diagnostics.
    call add(signs, {'buffer': a:buf, 'group': s:SIGN_GROUP, 'name': type, 'lnum': l1,
          \ 'priority': 20 - sev})
    if l2 < l1 || (l2 == l1 && c2 <= c1)
      " Empty: the character at the start, if there is one.
      let [l2, c2] = [l1, c1 + len(strcharpart(strpart(get(lines, l1 - 1, ''), c1 - 1), 0, 1))]
    endif
    if l2 > l1 || c2 > c1
      silent! call prop_add(l1, c1, {'type': type, 'end_lnum': l2, 'end_col': c2, 'bufnr': a:buf})
    endif
  endfor
  if !empty(signs)
    call sign_placelist(signs)
  endif
endfunction

function! s:unrender(buf) abort
  if !bufexists(a:buf)
    return
  endif
  silent! call sign_unplace(s:SIGN_GROUP, {'buffer': a:buf})
  if s:defined && bufloaded(a:buf)
    for name in values(s:SEVERITY)
      silent! call prop_remove({'type': 'CollabDiagnostic' . name, 'bufnr': a:buf, 'all': 1})
    endfor
  endif
endfunction

" Quickfix items of the diagnostics of one file (a path) or all (empty).
function! s:diagnostic_items(path) abort
  let items = []
  for path in a:path ==# '' ? sort(keys(s:diagnostics)) : [s:norm(a:path)]
    let lines = s:file_lines(path)
    for d in get(s:diagnostics, path, [])
      let range = get(d, 'range', {})
      let [lnum, col] = has_key(range, 'start') ? s:lnum_col(lines, range.start) : [1, 1]
      let sev = s:severity(d)
      let code = get(d, 'code', '')
      let source = get(d, 'source', '')
      let text = substitute(get(d, 'message', ''), '\n', ' ', 'g')
      if type(source) == v:t_string && source !=# ''
        let code = type(code) == v:t_number || type(code) == v:t_string ? code : ''
        let text .= printf(' [%s%s]', source, code !=# '' ? ' ' . code : '')
      endif
      call add(items, {'filename': path, 'lnum': lnum, 'col': col, 'text': text,
            \ 'type': s:QF_TYPE[sev]})
    endfor
  endfor
  return sort(items, {a, b -> a.filename !=# b.filename ? (a.filename <# b.filename ? -1 : 1)
        \ : a.lnum != b.lnum ? a.lnum - b.lnum : a.col - b.col})
endfunction

" :CollabDiagnostics: the current file's into the location list; with !, every
" file's into the quickfix list.
function! collab#language#diagnostics_list(all) abort
  let items = s:diagnostic_items(a:all ? '' : expand('%:p'))
  if a:all
    call setqflist([], ' ', {'title': 'collab: diagnostics', 'items': items})
  else
    call setloclist(0, [], ' ', {'title': 'collab: diagnostics', 'items': items})
  endif
  if empty(items)
    call collab#say('collab: no diagnostics' . (a:all ? '' : ' in this file'))
    execute a:all ? 'cclose' : 'lclose'
  else
    call s:show_list(!a:all)
  endif
endfunction

" The diagnostics of a buffer (default: the current one) as quickfix-like items.
function! collab#language#diagnostics(...) abort
  let buf = a:0 ? a:1 : bufnr('%')
  return bufname(buf) ==# '' ? [] : s:diagnostic_items(fnamemodify(bufname(buf), ':p'))
endfunction

" --------------------------------------------------------------- completion

" 'omnifunc': asks collab-ls synchronously, for at most g:collab_complete_timeout ms.
function! collab#language#complete(findstart, base) abort
  if a:findstart
    let s:complete_at = {}
    let buf = bufnr('%')
    if !collab#ready() || !collab#shared(buf)
      return -3
    endif
    let before = strpart(getline('.'), 0, col('.') - 1)
    let start = match(before, '\k*$')
    let params = collab#doc_position(buf, line('.'), col('.'))
    if empty(params)
      return -3
    endif
    let params.context = {'triggerKind': 1}
    let s:complete_at = {'buf': buf, 'params': params}
    return start
  endif
  if empty(s:complete_at) || s:complete_at.buf != bufnr('%')
    return []
  endif
  let timeout = get(g:, 'collab_complete_timeout', 2000)
  let resp = collab#request_sync('textDocument/completion', s:complete_at.params, timeout)
  if empty(resp)
    call collab#say(printf('collab: completion: no answer within %d ms', timeout), 'warn')
    return []
  elseif has_key(resp, 'error')
    call s:error('collab: completion failed: ' . get(resp.error, 'message', string(resp.error)))
    return []
  endif
  let result = get(resp, 'result', v:null)
  let items = type(result) == v:t_dict ? get(result, 'items', [])
        \ : type(result) == v:t_list ? result : []
  let out = []
  let base = &ignorecase ? tolower(a:base) : a:base
  for item in sort(copy(items), {a, b -> get(a, 'sortText', get(a, 'label', '')) <#
        \ get(b, 'sortText', get(b, 'label', '')) ? -1 : 1})
    let word = s:completion_word(item)
    let filter = get(item, 'filterText', word)
    if base !=# '' && stridx(&ignorecase ? tolower(word) : word, base) != 0
          \ && stridx(&ignorecase ? tolower(filter) : filter, base) != 0
      continue
    endif
    let doc = s:trim_blank(s:markup_lines(get(item, 'documentation', '')))
    call add(out, {'word': word, 'abbr': get(item, 'label', word),
          \ 'kind': get(s:KIND, get(item, 'kind', 0), ''),
          \ 'menu': strcharpart(substitute(get(item, 'detail', ''), '\n', ' ', 'g'), 0, 60),
          \ 'info': join(doc, "\n"), 'icase': &ignorecase, 'dup': 1})
  endfor
  let s:last.completion = map(copy(out), 'v:val.word')
  return out
endfunction

function! s:completion_word(item) abort
  let edit = get(a:item, 'textEdit', {})
  let word = type(edit) == v:t_dict && has_key(edit, 'newText') ? edit.newText
        \ : get(a:item, 'insertText', get(a:item, 'label', ''))
  if get(a:item, 'insertTextFormat', 1) == 2
    " A snippet: its placeholders' text, without tab stops.
    let word = substitute(word, '\${\d\+:\([^}]*\)}', '\1', 'g')
    let word = substitute(word, '\$\({\d\+}\|\d\+\)', '', 'g')
  endif
  return word
endfunction

" ---------------------------------------------------------- rename, format

function! collab#language#rename(name) abort
  let req = s:here('rename', 1)
  if empty(req)
    return
  endif
  let name = a:name !=# '' ? a:name : input('collab: rename to: ', expand('<cword>'))
  if name ==# ''
    return
  endif
  let req.params.newName = name
  call s:ask('textDocument/rename', req, 'rename', function('s:on_rename', [req.tick, name]))
endfunction

function! s:on_rename(tick, name, result, buf) abort
  if type(a:result) != v:t_dict || (empty(get(a:result, 'changes', {}))
        \ && empty(get(a:result, 'documentChanges', [])))
    let s:last.rename = a:name
    " A guest's: the host has applied it; it arrives as a peer edit.
    call collab#say(type(a:result) == v:t_dict && collab#info().role ==# 'guest'
          \ ? 'collab: renamed to ' . a:name . ' by the host' : 'collab: nothing to rename')
    return
  endif
  if getbufvar(a:buf, 'changedtick') != a:tick
    call collab#say('collab: rename: the buffer changed meanwhile; not applied, rename again', 'warn')
    return
  endif
  let answer = collab#apply_workspace_edit(a:result)
  if !get(answer, 'applied', v:false)
    call s:error('collab: rename: could not apply the edit: ' . get(answer, 'failureReason', '?'))
    return
  endif
  let s:last.rename = a:name
  call collab#say('collab: renamed to ' . a:name)
endfunction

function! collab#language#format() abort
  let req = s:here('format', 0)
  if empty(req)
    return
  endif
  let req.params.options = {'tabSize': shiftwidth(), 'insertSpaces': &expandtab ? v:true : v:false}
  call s:ask('textDocument/formatting', req, 'format', function('s:on_format', [req.tick]))
endfunction

function! s:on_format(tick, result, buf) abort
  if type(a:result) != v:t_list || empty(a:result)
    let s:last.format = 'done'
    call collab#say(type(a:result) == v:t_list && collab#info().role ==# 'guest'
          \ ? 'collab: formatted by the host' : 'collab: nothing to format')
    return
  endif
  if getbufvar(a:buf, 'changedtick') != a:tick
    call collab#say('collab: format: the buffer changed meanwhile; not applied, format again', 'warn')
    return
  endif
  call collab#apply_text_edits(a:buf, a:result)
  let s:last.format = 'applied'
  call collab#say('collab: formatted')
endfunction

" ------------------------------------------------------ buffers, mappings

" A shared buffer: our omnifunc, its diagnostics.
function! collab#language#attach(buf) abort
  if get(g:, 'collab_set_omnifunc', 1) && getbufvar(a:buf, '&omnifunc') !=# 'collab#complete'
    call setbufvar(a:buf, 'collab_old_omnifunc', getbufvar(a:buf, '&omnifunc'))
    call setbufvar(a:buf, '&omnifunc', 'collab#complete')
  endif
  if has_key(s:diagnostics, s:norm(bufname(a:buf)))
    call s:render(a:buf)
  endif
endfunction

" A buffer no longer shared: its previous omnifunc back.
function! collab#language#detach(buf) abort
  if bufexists(a:buf) && getbufvar(a:buf, '&omnifunc') ==# 'collab#complete'
    call setbufvar(a:buf, '&omnifunc', getbufvar(a:buf, 'collab_old_omnifunc', ''))
  endif
endfunction

const s:DEFAULT_KEYS = {'hover': 'K', 'definition': 'gd', 'references': 'gr'}

" BufEnter of a shared buffer: buffer-local mappings when g:collab_map_keys is set
" (1: K, gd, gr; or a Dict such as {'hover': 'K', 'definition': 'gd'}).
function! collab#language#map_keys(buf) abort
  let keys = get(g:, 'collab_map_keys', 0)
  if a:buf != bufnr('%') || getbufvar(a:buf, 'collab_mapped', 0)
        \ || (type(keys) != v:t_dict && !keys)
    return
  endif
  let keys = type(keys) == v:t_dict ? keys : s:DEFAULT_KEYS
  for [what, key] in items(keys)
    if has_key(s:DEFAULT_KEYS, what) || what ==# 'rename' || what ==# 'format'
      execute printf('nnoremap <buffer><silent> %s :<C-u>call collab#language#key(%s, %s)<CR>',
            \ key, string(what), string(key))
    endif
  endfor
  call setbufvar(a:buf, 'collab_mapped', 1)
endfunction

" A mapped key: the feature in a shared buffer, else the key's own meaning.
function! collab#language#key(what, key) abort
  if collab#ready() && collab#shared(bufnr('%'))
    if a:what ==# 'rename'
      call collab#language#rename('')
    else
      call collab#language#{a:what}()
    endif
  elseif a:key !~# '<'
    execute 'normal! ' . (v:count ? v:count : '') . a:key
  endif
endfunction

" collab-ls stopped: diagnostics, signs and omnifuncs go.
function! collab#language#reset(bufs) abort
  for buf in a:bufs
    call collab#language#detach(buf)
  endfor
  for path in keys(s:diagnostics)
    let buf = s:loaded_buf(path)
    if buf > 0
      call s:unrender(buf)
    endif
  endfor
  let s:diagnostics = {}
  let s:complete_at = {}
endfunction

" For scripts and tests: the last hover text, definitions, references...
function! collab#language#last() abort
  return deepcopy(s:last)
endfunction
