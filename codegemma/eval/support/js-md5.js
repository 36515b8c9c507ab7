// A stand-in for the npm module js-md5, which HumanEval-X JavaScript/162 requires
// (`require('js-md5')(text)` -> hex digest). Debian ships no package of it; this wraps Node's
// own crypto: md5(text), md5.hex(text), md5.array(text), md5.digest(text), md5.create().
'use strict'
const crypto = require('crypto')

const hash = (message) => crypto.createHash('md5').update(typeof message === 'string' ? message : Buffer.from(message))
const md5 = (message) => hash(message).digest('hex')
md5.hex = md5
md5.array = (message) => Array.from(hash(message).digest())
md5.digest = md5.array
md5.buffer = (message) => hash(message).digest().buffer
md5.base64 = (message) => hash(message).digest('base64')
md5.create = () => {
  const h = crypto.createHash('md5')
  const api = { update: (m) => { h.update(m); return api }, hex: () => h.digest('hex') }
  return api
}
module.exports = md5
