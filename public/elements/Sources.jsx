// The documentation passages a grounded answer was given, under the answer, collapsed.
// Sent by app/chainlit/render.py (sources_element) with props {title, caption, items: [{title,
// section, url, excerpt}]}; `props` is provided by Chainlit. React escapes every string, and a
// url is a plain http(s) address or "" (app.display.source_entries), so nothing here can run.
import {
  Accordion,
  AccordionContent,
  AccordionItem,
  AccordionTrigger
} from '@/components/ui/accordion';
import { BookOpen } from 'lucide-react';

// An excerpt's `inline code` (the docs' own Markdown) in monospace; everything stays text.
function Excerpt({ text }) {
  return (text || '').split('`').map((part, i) =>
    i % 2 ? <code key={i} className="font-mono">{part}</code> : <span key={i}>{part}</span>);
}

export default function Sources() {
  const items = props.items || [];
  return (
    <Accordion type="single" collapsible className="w-full sources-element">
      <AccordionItem value="sources" className="border-none">
        <AccordionTrigger
          className="flex items-center gap-1 justify-start p-0 text-sm text-muted-foreground hover:text-foreground hover:no-underline"
          id="sources-toggle"
        >
          <BookOpen className="h-4 w-4" />
          {props.title}
        </AccordionTrigger>
        <AccordionContent>
          <div className="mt-2 pl-4 border-l-2 border-primary flex flex-col gap-2">
            <p className="text-xs text-muted-foreground">{props.caption}</p>
            <ol className="list-decimal pl-4 flex flex-col gap-2">
              {items.map((s, i) => (
                <li key={i} className="text-sm">
                  {s.url ? (
                    <a href={s.url} target="_blank" rel="noopener noreferrer"
                       className="text-primary font-medium hover:underline">{s.title}</a>
                  ) : (
                    <span className="font-medium">{s.title}</span>
                  )}
                  <span className="text-muted-foreground"> — {s.section}</span>
                  <div className="text-xs text-muted-foreground mt-1"><Excerpt text={s.excerpt} /></div>
                </li>
              ))}
            </ol>
          </div>
        </AccordionContent>
      </AccordionItem>
    </Accordion>
  );
}
