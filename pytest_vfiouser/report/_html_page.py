"""The HTML report's own style sheet and script (inline: the report is one file).

The script works beside pytest-html's app.js, never inside it: app.js draws the
results table from its JSON blob (and redraws it, a new ``table#results-table``,
whenever it sorts or filters); a MutationObserver sees each new table and

* colours each Verdict cell and adds the requirement (from ``#vfu-requirements``)
  to each row's details (on load, to each requirement of the list too);
* hides the rows the current filter leaves out (``tbody.vfu-out``).

The filter: a click on an element ``.vfu-pick`` (a matrix cell, a part of the chart,
a key of its legend, a requirement's "rows" link or line) shows only the rows of its
section (``data-section``, on it or an ancestor; "total": any), verdict
(``data-verdict``: the case's final verdict, a row's ``data-final`` when it is not
the row's own) and requirement (``data-case``); ``#vfu-filter`` above the table says
which, and how many cases; the same click again, or "show every row", ends it.

On load it moves the summary (``.vfu-summary``) above pytest-html's environment table
(which it folds: a click on its heading opens it), and opening
``report.html#<case key>`` expands that row and scrolls to it.
"""

from __future__ import annotations

from ._html_chart import CHART_CSS
from ._html_requirements import REQUIREMENTS_CSS
from ._tones import tone_css

__all__ = ["FILTER_BAR", "SCRIPT", "STYLE"]

STYLE = (
    """<style>
.vfu-summary{color:black;margin-bottom:12px}
.vfu-summary h2{margin:12px 0 6px}
.vfu-picture{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}
.vfu-matrix,.vfu-run{border-collapse:collapse;margin-bottom:8px}
.vfu-matrix th,.vfu-matrix td,.vfu-run th,.vfu-run td{border:1px solid #ddd;padding:3px 8px}
.vfu-matrix td{text-align:right}
.vfu-matrix th{text-align:left}
.vfu-matrix td.vfu-zero{color:#bbb}
.vfu-matrix tr.vfu-total{font-weight:bold;border-top:2px solid #999}
.vfu-matrix td.vfu-pick{cursor:pointer}
.vfu-matrix td.vfu-pick:hover{background:#eef3ff}
.vfu-pick{cursor:pointer}
.vfu-pick.vfu-on{outline:2px solid #36c;background:#eef3ff}
g.vfu-pick.vfu-on rect{stroke:#000;stroke-width:2}
.vfu-run th{text-align:left;font-weight:normal;color:#666;vertical-align:top}
.vfu-filter{background:#eef3ff;border:1px solid #9bd;padding:4px 8px;margin:8px 0;color:black}
.vfu-filter button{margin-left:8px}
tbody.vfu-out{display:none}
#results-table-head th[data-column-type="result"],#results-table td.col-result{display:none}
.collapsible td.col-verdict:hover::after{content:" (hide details)"}
tbody:has(tr.extras-row.hidden) .collapsible td.col-verdict:hover::after{content:" (show details)"}
"""
    + tone_css(lambda tone, verdicts: ",".join(f".vfu-v-{v}" for v in verdicts))
    + "\n"
    + CHART_CSS
    + REQUIREMENTS_CSS
    + """.vfu-detail{white-space:normal;font-family:Helvetica,Arial,sans-serif;font-size:12px;
margin:0 0 8px}
.vfu-detail>div{margin:2px 0}
.vfu-req{white-space:pre-line;font-family:Helvetica,Arial,sans-serif;color:black;margin:4px 0}
.vfu-label{font-weight:bold}
.vfu-msg{white-space:pre-wrap}
.vfu-excerpt{white-space:pre-wrap;background:#f6f6f6;margin:2px 0;padding:4px;font-size:11px}
a.vfu-log{color:#36c;margin-right:6px}
.vfu-cut{color:#666}
td.col-caseid:target{outline:2px solid #36c}
</style>"""
)

# Above the table (pytest-html's postfix): what the filter shows.
FILTER_BAR = (
    '<div id="vfu-filter" class="vfu-filter" hidden>Showing the rows of '
    '<b class="vfu-what"></b> <button type="button" class="vfu-pick">show every row</button></div>'
)

SCRIPT = """<script>
(function(){
var REQ=null,F=null;
function reqs(){if(REQ===null){var e=document.getElementById('vfu-requirements');
REQ=e?JSON.parse(e.textContent):{}}return REQ}
function cell(tb,c){return tb.querySelector('td.col-'+c)}
function fill(root){if(!root.querySelectorAll)return;
root.querySelectorAll('tbody.results-table-row').forEach(function(tb){
var v=cell(tb,'verdict');
if(v&&v.textContent)v.classList.add('vfu-v-'+v.textContent);
if(tb.querySelector('.vfu-req'))return;var c=cell(tb,'caseid');if(!c)return;
var t=reqs()[c.textContent.replace(/\\[.*$/,'')];var x=tb.querySelector('td.extra');
if(!t||!x)return;
var d=document.createElement('div');d.className='vfu-req';
d.innerHTML='<span class="vfu-label">Requirement:</span> ';
d.appendChild(document.createTextNode(t));x.insertBefore(d,x.firstChild)})}
function key(tb){var c=cell(tb,'caseid');return c?c.textContent:''}
function verdict(tb){var v=cell(tb,'verdict');
return v?(v.getAttribute('data-final')||v.textContent):''}
function shown(tb){if(!F)return true;if(!cell(tb,'caseid'))return false;
if(F.section&&cell(tb,'section').textContent!==F.section)return false;
if(F.verdict&&verdict(tb)!==F.verdict)return false;
return !F.case||key(tb).replace(/\\[.*$/,'')===F.case}
function pick(el){var s=el.closest('[data-section]');s=s?s.getAttribute('data-section'):null;
var v=el.getAttribute('data-verdict');
return {section:s&&s!=='total'?s:null,verdict:v&&v!=='total'?v:null,
case:el.getAttribute('data-case')||null}}
function same(a,b){return a.section===b.section&&a.verdict===b.verdict&&a.case===b.case}
function apply(){var cases={},rows=0;
document.querySelectorAll('#results-table tbody.results-table-row').forEach(function(tb){
var ok=shown(tb);tb.classList.toggle('vfu-out',!ok);if(ok&&F){rows++;cases[key(tb)]=1}});
var bar=document.getElementById('vfu-filter');
if(bar){bar.hidden=!F;if(F){var n=Object.keys(cases).length,what=[];
if(F.case)what.push(F.case);if(F.section)what.push('section '+F.section);
if(F.verdict)what.push(F.verdict);
bar.querySelector('.vfu-what').textContent=what.join(', ')+': '+n+(n===1?' case':' cases')+
(rows!==n?' ('+rows+' rows)':'')}}
document.querySelectorAll('.vfu-pick').forEach(function(el){
el.classList.toggle('vfu-on',!!F&&same(pick(el),F))})}
document.addEventListener('click',function(e){
var el=e.target.closest?e.target.closest('.vfu-pick'):null;if(!el)return;e.preventDefault();
var f=pick(el);F=(!f.section&&!f.verdict&&!f.case)||(F&&same(F,f))?null:f;apply();
var bar=document.getElementById('vfu-filter');if(F&&bar)bar.scrollIntoView({block:'start'})});
new MutationObserver(function(ms){var table=false;ms.forEach(function(m){
m.addedNodes.forEach(function(n){fill(n);table=table||n.id==='results-table'})});
if(table&&F)apply()})
.observe(document.documentElement,{childList:true,subtree:true});
function go(){var id=location.hash.slice(1);if(!id)return;try{id=decodeURIComponent(id)}catch(e){}
var el=document.getElementById(id);if(!el)return;var body=el.closest('tbody');
if(body&&body.classList.contains('vfu-out')){F=null;apply()}
var extras=body&&body.querySelector('.extras-row');
if(extras&&extras.classList.contains('hidden'))el.click();
setTimeout(function(){var t=document.getElementById(id);
if(t)t.scrollIntoView({block:'center'})},0)}
function quotes(){document.querySelectorAll('details.vfu-rq .vfu-quote').forEach(function(q){
q.textContent=reqs()[q.closest('details').getAttribute('data-case')]||''})}
function start(){quotes();var s=document.querySelector('.vfu-summary'),
h=document.getElementById('environment-header'),t=document.getElementById('environment');
if(s&&h){h.parentNode.insertBefore(s,h)}
if(h&&t){t.classList.add('hidden');h.classList.add('collapsed')}go()}
window.addEventListener('DOMContentLoaded',start);window.addEventListener('hashchange',go);
})();
</script>"""
