#!/usr/bin/env python3
"""A JSON Schema (2020-12) of one OCSF event class, generated from an ocsf-schema checkout.

Usage: scripts/ocsf-json-schema.py <ocsf-schema dir> <category>/<class file> > schema.json
       (e.g. `application/api_activity`)

The OCSF repository describes its classes in its own metaschema (a dictionary of attributes,
objects that extend one another, classes that extend `base_event`, profiles). This resolves
one class the way the OCSF server does: `extends` chains merged child over parent, the
dictionary's types mapped to JSON types (`timestamp_t` is a `long_t` is an integer), `*_id`
enumerations as closed sets, required attributes required, `at_least_one` and `just_one`
constraints as `anyOf` / `oneOf`, and no attribute the class or object does not define
(`additionalProperties: false`). Attributes a profile adds are allowed, never required (a
profile applies only when the event lists it in `metadata.profiles`).
"""

import json
import os
import sys


def load(root, rel):
    with open(os.path.join(root, rel)) as f:
        return json.load(f)


def merge(parent, child):
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def attributes_of(root, definition):
    """The attributes a definition declares, its `$include`s (optional) merged in."""
    attributes = {}
    for include in definition.get("attributes", {}).get("$include", []):
        for name, attr in load(root, include).get("attributes", {}).items():
            attr = dict(attr)
            attr["requirement"] = "optional"
            attributes[name] = merge(attributes.get(name, {}), attr)
    for name, attr in definition.get("attributes", {}).items():
        if name != "$include":
            attributes[name] = merge(attributes.get(name, {}), attr)
    return attributes


def resolve(root, kind, name, index):
    """An object or class with its `extends` chain merged in: (attributes, constraints, raw)."""
    definition = index[name]
    attributes, constraints = {}, {}
    parent = definition.get("extends")
    if parent and parent != "object" and parent in index:
        attributes, constraints, _ = resolve(root, kind, parent, index)
    attributes = {k: dict(v) for k, v in attributes.items()}
    for attr_name, attr in attributes_of(root, definition).items():
        attributes[attr_name] = merge(attributes.get(attr_name, {}), attr)
    if "constraints" in definition:
        constraints = definition["constraints"]
    return attributes, constraints, definition


def json_type(dictionary, type_name):
    types = dictionary["types"]["attributes"]
    while type_name in types and types[type_name].get("type"):
        type_name = types[type_name]["type"]
    return {
        "string_t": {"type": "string"},
        "integer_t": {"type": "integer"},
        "long_t": {"type": "integer"},
        "float_t": {"type": "number"},
        "boolean_t": {"type": "boolean"},
        "json_t": {},
        "object": {"type": "object"},
    }.get(type_name)


def schema_of(root, dictionary, objects, attributes, constraints, pending):
    properties, required = {}, []
    for name, attr in sorted(attributes.items()):
        attr = merge(dictionary["attributes"].get(name, {}), attr)
        type_name = attr.get("type")
        if type_name == "object_t":
            type_name = attr.get("object_type")
        prop = json_type(dictionary, type_name)
        if prop is None:
            if type_name not in objects:
                raise SystemExit(f"{name}: unknown type {type_name}")
            pending.add(type_name)
            prop = {"$ref": f"#/$defs/{type_name}"}
        else:
            prop = dict(prop)
            if prop.get("type") == "integer" and attr.get("enum"):
                prop["enum"] = sorted(int(k) for k in attr["enum"])
        if attr.get("is_array"):
            prop = {"type": "array", "items": prop}
        properties[name] = prop
        if attr.get("requirement") == "required":
            required.append(name)
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if constraints.get("at_least_one"):
        schema["anyOf"] = [{"required": [n]} for n in constraints["at_least_one"]]
    if constraints.get("just_one"):
        schema["oneOf"] = [{"required": [n]} for n in constraints["just_one"]]
    return schema


def main():
    root, class_path = sys.argv[1], sys.argv[2]
    dictionary = load(root, "dictionary.json")
    objects = {}
    for file in sorted(os.listdir(os.path.join(root, "objects"))):
        definition = load(root, os.path.join("objects", file))
        objects[definition["name"]] = definition
    classes = {"base_event": load(root, "events/base_event.json")}
    category_dir = os.path.join(root, "events", class_path.split("/")[0])
    for file in sorted(os.listdir(category_dir)):
        definition = load(root, os.path.join(category_dir, file))
        classes[definition["name"]] = definition
    name = class_path.split("/")[1]
    attributes, constraints, definition = resolve(root, "class", name, classes)
    category_name = classes[definition.get("extends")].get("category") or definition.get("category")
    category_uid = load(root, "categories.json")["attributes"][category_name]["uid"]
    class_uid = category_uid * 1000 + definition["uid"]
    activities = sorted(int(k) for k in attributes["activity_id"]["enum"])

    pending, defs = set(), {}
    schema = schema_of(root, dictionary, objects, attributes, constraints, pending)
    schema["properties"]["class_uid"] = {"const": class_uid}
    schema["properties"]["category_uid"] = {"const": category_uid}
    schema["properties"]["type_uid"] = {"enum": [class_uid * 100 + a for a in activities]}
    while pending - defs.keys():
        obj = sorted(pending - defs.keys())[0]
        obj_attributes, obj_constraints, _ = resolve(root, "object", obj, objects)
        defs[obj] = schema_of(root, dictionary, objects, obj_attributes, obj_constraints, pending)
    version = load(root, "version.json")["version"]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://schema.ocsf.io/{version}/classes/{name}",
        "title": f"OCSF {version} {definition['caption']} ({class_uid}), generated by "
        "scripts/ocsf-json-schema.py from the ocsf-schema repository",
        **schema,
        "$defs": dict(sorted(defs.items())),
    }
    json.dump(schema, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
