"""Plain English text for calibrating and evaluating the language model (written for
this project; two separate passages, so the evaluation never sees calibration text)."""

from __future__ import annotations

__all__ = ["CALIBRATION_TEXT", "EVAL_TEXT"]

CALIBRATION_TEXT = (
    "The town library opened in 1897 in a narrow brick building near the railway station. "
    "For its first twenty years it had no electric light, and readers were asked to leave "
    "before sunset in winter. The collection grew slowly, mostly through gifts from local "
    "families, until a new building was paid for by public subscription after the war. "
    "Today the library lends books, films and music, runs reading groups for children and "
    "offers free computer classes to older residents. Its busiest day is Saturday, when "
    "the reading room fills with students preparing for examinations.\n\n"
    "Bread is made from flour, water, salt and yeast. The yeast feeds on sugars in the "
    "dough and releases carbon dioxide, which makes the dough rise. Kneading develops "
    "gluten, a network of proteins that traps the gas and gives the loaf its structure. "
    "A slow rise in a cool kitchen produces more flavour than a fast one in a warm place. "
    "Bakers often score the top of the loaf with a sharp blade just before baking, so that "
    "it expands evenly in the oven instead of tearing at the sides.\n\n"
    "Most modern computers store numbers in binary. A group of eight bits, called a byte, "
    "can represent 256 different values. Programs that process images, sound or text "
    "spend much of their time moving bytes between memory and the processor, and "
    "engineers work hard to keep the most frequently used data close at hand."
)

EVAL_TEXT = (
    "The river rises in the hills to the north and flows for about two hundred miles before "
    "it reaches the sea. For centuries it was the main road of the region: boats carried "
    "wool, timber and grain down to the coast, and returned with salt, cloth and news from "
    "the wider world. Small towns grew up wherever the river could be crossed, and many of "
    "them still have the old stone bridges that were built in the Middle Ages.\n\n"
    "In the nineteenth century the railway arrived, and trade moved quickly from the water "
    "to the land. The mills along the banks closed one after another, and some of the "
    "harbours silted up. For a long time the river was treated as little more than a drain "
    "for the factories that remained. Fish disappeared from its lower reaches, and people "
    "stopped swimming in it during the summer.\n\n"
    "Things began to change about fifty years ago, when new laws limited what could be "
    "poured into the water. Volunteers cleared rubbish from the banks, and engineers built "
    "passes that allowed salmon to swim around the weirs. Today otters have returned to "
    "several stretches of the river, and a long footpath follows it from its source to its "
    "mouth. Walkers can spend a week or more on the route, staying in villages along the "
    "way, and many say that the quiet of the valley is the best part of the journey. Local "
    "schools take children to the water to count insects and test its quality, and the "
    "results are shared with scientists who study how rivers recover."
)
